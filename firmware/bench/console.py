"""``bodycam run --sim --console``: the bench typed at a terminal (standard library ``cmd``).

The service loop keeps the main thread (signals, systemd pings); the console reads lines in
its own thread, hands each to the bench and prints the reply, while a second thread prints
every event as a log line: state changes, the lamp pattern, cues with their vibration and
tones, the motor and buzzer as driven, journal records and device warnings. ``quit`` or
end of input shuts the service down cleanly.
"""
from __future__ import annotations

import cmd
import json
import sys
import threading
from typing import IO, Any

from firmware.bench.commands import COMMANDS, help_text
from firmware.bench.rig import Bench


def format_event(e: dict[str, Any]) -> str:
    """One event as a short log line for a person at the bench."""
    kind, t = e["event"], f"[{e.get('t', 0):9.3f}]"
    if kind == "state":
        text = f"{e['from']} -> {e['to']}"
    elif kind == "lamps":
        text = "  ".join(f"{name} {e[name]}" for name in ("green", "yellow", "red"))
    elif kind == "cue":
        tones = ", ".join(f"{hz:g}" for hz in dict.fromkeys(e["tones_hz"]))
        text = (f"{e['name']}: {e['seconds']:g} s, {'vibration, ' if e['vibrate'] else ''}"
                f"tones {tones or 'none'} Hz")
    elif kind == "output":
        parts = ["vibrating" if e["vibrating"] else "motor off",
                 f"buzzer {e['tone_hz']:g} Hz" if e["tone_hz"] is not None else "buzzer off"]
        text = ", ".join(parts)
    elif kind == "journal":
        text = f"#{e['seq']} {e['type']}"
        if e["type"] in ("state",):
            text += f" {e['payload'].get('from')} -> {e['payload'].get('to')} ({e['payload'].get('cause')})"
        elif e["type"] == "self-check":
            failed = [i["name"] for i in e["payload"].get("items", []) if i.get("status") == "fail"]
            text += " GO" if e["payload"].get("go") else f" NO-GO ({', '.join(failed) or '?'})"
        elif "permille" in e["payload"]:
            text += f" ({e['payload']['permille'] / 10:g} %)"
        elif "cause" in e["payload"]:
            text += f" ({e['payload']['cause']})"
    elif kind == "log":
        text = f"{e['level']} {e['logger']}: {e['message']}"
    else:
        text = json.dumps({k: v for k, v in e.items() if k not in ("event", "t")})
    return f"{t} {kind:<8} {text}"


def format_reply(r: dict[str, Any]) -> str:
    if not r.get("ok"):
        return f"error: {r.get('error')}"
    if "help" in r:
        return str(r["help"])
    if "show" in r:
        return "\n".join(f"  {k}: {v}" for k, v in r["show"].items())
    extra = f" ({r['detail']})" if "detail" in r else ""
    return f"ok: {r.get('command')}" + (f" -> {r['state']}" if "state" in r else "") + extra


class BenchConsole(cmd.Cmd):
    intro = "bench console: type 'help' for the commands, 'quit' to shut the device down"
    prompt = "bench> "

    def __init__(self, bench: Bench, stdin: IO[str] | None = None, stdout: IO[str] | None = None) -> None:
        super().__init__(stdin=stdin, stdout=stdout)
        self.bench = bench
        self.out = stdout or sys.stdout
        self.use_rawinput = stdin is None
        self._print_lock = threading.Lock()
        self.done = False

    def say(self, text: str) -> None:
        with self._print_lock:
            self.out.write(text + "\n")
            self.out.flush()

    def emptyline(self) -> bool:   # not cmd's default of repeating the last command
        return False

    def default(self, line: str) -> None:
        reply = self.bench.submit(line)
        self.say(format_reply(reply))
        if reply.get("ok") and line.split()[0].lower() == "quit":
            self.done = True

    def postcmd(self, stop: bool, line: str) -> bool:
        return stop or self.done

    def do_help(self, arg: str) -> None:
        name = arg.strip() or None
        if name is not None and name not in COMMANDS:
            self.say(f"error: help: no command {name!r}")
            return
        self.say(help_text(name))

    def do_quit(self, arg: str) -> None:
        self.default(("quit " + arg).strip())

    def do_EOF(self, arg: str) -> bool:
        self.say("")
        self.default("quit")
        return True

    def completenames(self, text: str, *ignored: Any) -> list[str]:
        return [name for name in COMMANDS if name.startswith(text)]


def start(bench: Bench, on_end: Any) -> threading.Thread:
    """Run the console on this terminal in a thread; ``on_end()`` when it ends (quit, EOF)."""
    console = BenchConsole(bench)
    events = bench.subscribe()

    def show_events() -> None:
        while True:
            event = events.get()
            console.say(format_event(event))
            if event["event"] == "closed":
                return

    def loop() -> None:
        try:
            console.cmdloop()
        finally:
            bench.unsubscribe(events)
            on_end()

    threading.Thread(target=show_events, name="bench-events", daemon=True).start()
    thread = threading.Thread(target=loop, name="bench-console", daemon=True)
    thread.start()
    return thread
