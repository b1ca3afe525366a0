// Plays the recording's HLS playlist of original MPEG-TS segments with hls.js (Media Source Extensions).
(function () {
  "use strict";
  var video = document.getElementById("video");
  var error = document.getElementById("player-error");
  if (!video) { return; }
  function fail(text) { error.textContent = text; error.hidden = false; video.dataset.state = "error"; }
  if (!window.Hls || !window.Hls.isSupported()) { fail("此浏览器无法播放（不支持 Media Source Extensions）"); return; }
  // startFragPrefetch: fetch the first segment while the media element is still being attached
  var hls = new window.Hls({ enableWorker: false, startFragPrefetch: true });
  hls.on(window.Hls.Events.ERROR, function (_e, data) {
    if (data.fatal) { fail("播放失败：" + (data.response && data.response.code === 409 ? "原始分段校验不符，已告警" : data.details)); }
  });
  hls.on(window.Hls.Events.MANIFEST_PARSED, function () { video.dataset.state = "ready"; });
  hls.loadSource(video.dataset.playlist);
  hls.attachMedia(video);
  window.stationPlayer = hls;
}());
