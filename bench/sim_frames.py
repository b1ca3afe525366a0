"""Write the simulated camera's frames as raw I420 to stdout (for feeding ffmpeg the same input).

    python bench/sim_frames.py 1920x1080 300 | ffmpeg -f rawvideo -pix_fmt yuv420p -s 1920x1080 -i - ...
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.camera import SimCamera  # noqa: E402


def main() -> None:
    w, h = (int(x) for x in sys.argv[1].split("x"))
    cam = SimCamera(w, h, 30)
    out = sys.stdout.buffer
    for i in range(int(sys.argv[2])):
        out.write(cam._render(i).data)


if __name__ == "__main__":
    main()
