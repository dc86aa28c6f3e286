"""light's ceiling: clearbg's own two ffmpeg children and the pipes between them, with the model
and the matte taken out.

    python ffmpeg_pipes.py DEBUG_LOG ALPHA_FILE OUTPUT

DEBUG_LOG is the log of a `clearbg remove` run with `CLEARBG_LOG=clearbg_engine=debug`, from which
the decoder's and the encoder's argument lists are taken exactly as clearbg ran them; ALPHA_FILE
is that run's alpha, decoded to raw gray beforehand. The decoder's frames are handed to the
encoder with the next alpha plane appended, through a queue of three frames as in clearbg's
pipeline (a thread reads while the main thread writes), and the encoder writes OUTPUT. Prints
{"frames": N, "seconds": S, "fps": F}. bench/run.sh times it as tool `ffmpeg_pipes`.
"""
import json
import queue
import re
import subprocess
import sys
import threading
import time

log_path, alpha_path, output = sys.argv[1:4]
commands = [json.loads(m.group(1)) for m in re.finditer(r'spawning program="ffmpeg" args=(\[.*\])', open(log_path).read())]
if len(commands) != 2:
    sys.exit(f"{log_path}: expected clearbg's decoder and encoder command lines, found {len(commands)}")
decoder, encoder = commands
encoder[-1] = "file:" + output
width, height = map(int, encoder[encoder.index("-s") + 1].split("x"))
luma = width * height
frame_bytes = luma + 2 * ((width + 1) // 2) * ((height + 1) // 2)

start = time.monotonic()
dec = subprocess.Popen(["ffmpeg", *decoder], stdout=subprocess.PIPE)
enc = subprocess.Popen(["ffmpeg", *encoder], stdin=subprocess.PIPE)
frames = queue.Queue(maxsize=3)


def read_frames():
    while len(yuv := dec.stdout.read(frame_bytes)) == frame_bytes:
        frames.put(yuv)
    frames.put(None)


threading.Thread(target=read_frames, daemon=True).start()
count = 0
with open(alpha_path, "rb") as alpha:
    while (yuv := frames.get()) is not None:
        enc.stdin.write(yuv)
        enc.stdin.write(alpha.read(luma))
        count += 1
enc.stdin.close()
if dec.wait() != 0 or enc.wait() != 0:
    sys.exit("an ffmpeg child failed")
seconds = time.monotonic() - start
print(json.dumps({"frames": count, "seconds": round(seconds, 3), "fps": round(count / seconds, 3)}))
