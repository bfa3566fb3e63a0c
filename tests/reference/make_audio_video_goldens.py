#!/usr/bin/env python3
"""Record the audio and video goldens for tokenizers-mm (issue 3: audio/ and video/).

Run from the repository root with the reference venv:

    /work/refenv/bin/python tests/reference/make_audio_video_goldens.py          # rewrite
    /work/refenv/bin/python tests/reference/make_audio_video_goldens.py --check  # verify only

Pinned (asserted below): transformers 5.24.0, torch 2.15.0, numpy 2.4.6, Pillow 13.0.0,
torchcodec 0.17.0 (transformers' default video decoder; it links the system FFmpeg, Debian 12's
libav* 5.1 here: `apt-get install ffmpeg`), PyAV 18.1.0 (decodes the corpus audio, bundles its
own FFmpeg 8). Neither torchcodec nor av is in requirements.txt's core set:
    /work/refenv/bin/pip install torchcodec==0.17.0 av==18.1.0

Writes
  tests/fixtures/av_goldens.json     all numbers below (< 1 MB)
  tests/fixtures/av/anim_7f.gif      a small animated GIF made here (Pillow), video-from-GIF case
  tests/fixtures/av/overlay_*.png    the processor's timestamp overlay (top-left crop) drawn by
                                     Pillow with the bundled tokenizers-mm/assets/fonts/Roboto-Regular.ttf

Audio reference: `WhisperFeatureExtractor(feature_size=80 | 128)(x, sampling_rate=16000,
padding="longest", return_tensors="np")` — with torch installed the extractor takes its torch
STFT path (`_torch_extract_fbank_features`). Inputs are waveforms the Rust test has bit for bit:
  * synthetic ones stored here as base64 float32 (so no resampler and no libm is involved);
  * the corpus clip espeak_de_16k_mono.flac (16 kHz: no resampling), decoded with PyAV to int16
    and scaled by 1/32768 — exactly what Symphonia's FLAC decoder yields; its int16 checksum is
    recorded so the test proves the decode is identical before comparing mels.
  * one case with the extractor's default 30 s zero padding (`padding="max_length"`).
Per corpus audio file also the PyAV decode facts (rate, channels, samples per channel, checksum
for lossless files, RMS) for decoder cross-checks.

Video reference: `Ernie4_5_VLMoeVideoProcessor` (class defaults: 16..180 frames, no fps, video
min/max pixels 299*28*28 / 1196*28*28) called on each corpus file path with
`return_metadata=True`, which decodes through torchcodec (`seek_mode="exact"`): recorded
metadata, frame indices, timestamps (and their "time: ..." strings), `video_grid_thw`, resized
size, the same with `fps=2`, an 8x8 box-averaged thumbnail of the first, middle and last sampled
decoded frame (before the overlay; rotation applied by torchcodec), and `sample_frames` on a grid of synthetic
metadata (large counts, fractional fps, fewer frames than min_frames).
The overlay crops come from the processor's own `_render_image_with_timestamp` on mid-grey frames.
"""

import base64
import io
import json
import math
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import PIL  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402

import av  # noqa: E402
import torchcodec  # noqa: E402
from torchcodec.decoders import VideoDecoder  # noqa: E402
from transformers import WhisperFeatureExtractor  # noqa: E402
from transformers.models.ernie4_5_vl_moe.image_processing_ernie4_5_vl_moe import smart_resize  # noqa: E402
from transformers.models.ernie4_5_vl_moe.video_processing_ernie4_5_vl_moe import (  # noqa: E402
    Ernie4_5_VLMoeVideoProcessor,
)
from transformers.video_utils import VideoMetadata  # noqa: E402

PINNED = {
    "transformers": (transformers.__version__, "5.24.0"),
    "torch": (torch.__version__.split("+")[0], "2.15.0"),
    "numpy": (np.__version__, "2.4.6"),
    "Pillow": (PIL.__version__, "13.0.0"),
    "torchcodec": (torchcodec.__version__.split("+")[0], "0.17.0"),
    "av": (av.__version__, "18.1.0"),
}
for name, (have, want) in PINNED.items():
    assert have == want, f"{name} {have} != pinned {want}"

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MEDIA = os.environ.get("ERNIE_MEDIA_DIR", os.path.join(ROOT, "..", "shared", "media"))
OUT_JSON = os.path.join(ROOT, "tests", "fixtures", "av_goldens.json")
OUT_DIR = os.path.join(ROOT, "tests", "fixtures", "av")
FONT = os.path.join(ROOT, "tokenizers-mm", "assets", "fonts", "Roboto-Regular.ttf")


def r(x, n=6):
    """Round floats for JSON (the test compares with tolerances far above 1e-6)."""
    return float(f"{float(x):.{n}g}")


def b64_f32(a):
    return base64.b64encode(np.asarray(a, dtype="<f4").tobytes()).decode()


# ---------------------------------------------------------------------------------------- audio
def synthetic_waveforms():
    sr = 16000
    t = np.arange(8000, dtype=np.float64) / sr  # 0.5 s
    chirp = 0.5 * np.sin(2 * np.pi * 440 * t) + 0.3 * np.sin(2 * np.pi * (150 * t + 2500 * t * t))
    rng = np.random.default_rng(1234)
    noise = rng.standard_normal(4000) * 0.1
    noise[1000:1100] += 0.8  # a click
    clicks = np.zeros(3000)
    clicks[::700] = 1.0
    short = 0.25 * np.sin(2 * np.pi * 1000 * np.arange(350) / sr)  # < n_fft: shorter than one window
    return {
        "chirp_0.5s": chirp.astype(np.float32),
        "noise_click_0.25s": noise.astype(np.float32),
        "sparse_clicks": clicks.astype(np.float32),
        "short_350": short.astype(np.float32),
    }


def decode_pyav(path):
    """All audio samples as float32 [channels, n] plus the stream facts, through PyAV."""
    c = av.open(path)
    s = c.streams.audio[0]
    chunks = []
    for frame in c.decode(s):
        a = frame.to_ndarray()
        if frame.format.is_planar:
            chunks.append(a)
        else:
            chunks.append(a.reshape(-1, frame.layout.nb_channels).T)
    x = np.concatenate(chunks, axis=1)
    return x, s.sample_rate, s.codec_context.name, frame.format.name


def mel_case(fe, x, padding):
    out = fe(x, sampling_rate=16000, padding=padding, return_tensors="np")["input_features"][0]
    return out.astype(np.float32)  # [n_mels, n_frames]


def audio_goldens():
    cases = []
    waves = synthetic_waveforms()
    for n_mels in (80, 128):
        fe = WhisperFeatureExtractor(feature_size=n_mels)
        for name, x in waves.items():
            m = mel_case(fe, x, "longest")
            cases.append({"name": name, "n_mels": n_mels, "padding": "longest", "waveform": name,
                          "shape": list(m.shape), "mel_f32_b64": b64_f32(m)})
        # The corpus FLAC (16 kHz mono): int16 → /32768, as Symphonia does.
        flac = os.path.join(MEDIA, "audio", "espeak_de_16k_mono.flac")
        pcm, sr, _, fmt = decode_pyav(flac)
        assert sr == 16000 and pcm.shape[0] == 1 and fmt == "s16", (sr, pcm.shape, fmt)
        ints = pcm[0].astype(np.int64)
        x = (pcm[0].astype(np.float32) / np.float32(32768.0)).astype(np.float32)
        m = mel_case(fe, x, "longest")
        every = 7
        cases.append({
            "name": "corpus:audio/espeak_de_16k_mono.flac", "n_mels": n_mels, "padding": "longest",
            "source": "audio/espeak_de_16k_mono.flac",
            "pcm_s16_count": int(ints.size), "pcm_s16_sum": int(ints.sum()),
            "pcm_s16_weighted_sum": int((ints * (np.arange(ints.size) % 997)).sum()),
            "shape": list(m.shape), "frame_stride": every, "mel_frames_f32_b64": b64_f32(m[:, ::every]),
            "mean": r(m.astype(np.float64).mean(), 9), "max": r(m.max(), 9), "min": r(m.min(), 9),
        })
        # The extractor's default call: zero-padded to 30 s → [n_mels, 3000].
        x = waves["chirp_0.5s"]
        m = mel_case(fe, x, "max_length")
        cases.append({"name": "chirp_0.5s_padded_30s", "n_mels": n_mels, "padding": "max_length",
                      "waveform": "chirp_0.5s", "shape": list(m.shape), "first_frames": 60,
                      "mel_first_frames_f32_b64": b64_f32(m[:, :60]),
                      "mean": r(m.astype(np.float64).mean(), 9), "min": r(m.min(), 9), "max": r(m.max(), 9)})
    # Per-file decoder facts (PyAV = FFmpeg 8), including the edge-case WAVs; files PyAV refuses
    # are recorded with its error.
    files = []
    for sub in ("", "edge_wav/"):
        for name in sorted(os.listdir(os.path.join(MEDIA, "audio", sub))):
            path = os.path.join(MEDIA, "audio", sub, name)
            if not os.path.isfile(path) or name.endswith(".txt"):
                continue
            try:
                pcm, sr, codec, fmt = decode_pyav(path)
            except Exception as e:  # noqa: BLE001 - recorded, not hidden
                files.append({"file": "audio/" + sub + name, "pyav_error": type(e).__name__})
                continue
            if pcm.dtype == np.uint8:
                mono = ((pcm.astype(np.float64) - 128.0) / 128.0).mean(axis=0)
            else:
                scale = {np.dtype("int16"): 2.0 ** 15, np.dtype("int32"): 2.0 ** 31}.get(pcm.dtype, 1.0)
                mono = (pcm.astype(np.float64) / scale).mean(axis=0)
            files.append({"file": "audio/" + sub + name, "sample_rate": sr, "channels": int(pcm.shape[0]),
                          "frames": int(pcm.shape[1]), "codec": codec, "sample_format": fmt,
                          "mono_rms": r(np.sqrt((mono ** 2).mean()), 7),
                          "mono_mean_abs": r(np.abs(mono).mean(), 7)})
    return {"waveforms_f32_b64": {k: b64_f32(v) for k, v in waves.items()}, "mel_cases": cases,
            "decoded_files": files}


# ---------------------------------------------------------------------------------------- video
def thumb8(frame_hwc):
    """8x8 box average (per channel) of an HxWx3 uint8 frame: rows/cols split as np.array_split."""
    f = frame_hwc.astype(np.float64)
    out = np.zeros((8, 8, 3))
    for i, rows in enumerate(np.array_split(np.arange(f.shape[0]), 8)):
        for j, cols in enumerate(np.array_split(np.arange(f.shape[1]), 8)):
            out[i, j] = f[rows][:, cols].mean(axis=(0, 1))
    return [r(v, 6) for v in out.reshape(-1)]


def processor_run(proc, path, **kw):
    out = proc(videos=[path], return_metadata=True, return_tensors="pt", **kw)
    meta = out["video_metadata"][0]
    idx = [int(i) for i in meta.frames_indices]
    grid = [int(v) for v in out["video_grid_thw"][0]]
    ts = meta.timestamps
    return {
        "total_num_frames": int(meta.total_num_frames), "fps": r(meta.fps, 12), "duration": r(meta.duration, 9),
        "height": int(meta.height), "width": int(meta.width),
        "frame_indices": idx,
        "timestamps": [r(t, 9) for t in ts],
        "timestamp_text": [proc._convert_timestamp(t) for t in ts],
        "video_grid_thw": grid, "resized": [grid[1] * 14, grid[2] * 14],
        "pixel_values_shape": list(out["pixel_values_videos"].shape),
        "n_tokens": grid[0] // 2 * (grid[1] // 2) * (grid[2] // 2),
    }


def make_gif(path):
    """7 frames, 40x30, moving square, delays 100..400 ms and one 0 (ffmpeg reads it as 100)."""
    frames = []
    for k in range(7):
        im = Image.new("RGB", (40, 30), (20 * k, 100, 200 - 20 * k))
        for y in range(8, 20):
            for x in range(4 * k, 4 * k + 10):
                im.putpixel((x, y), (255, 255, 0))
        frames.append(im.convert("P", palette=Image.Palette.ADAPTIVE, colors=16))
    durations = [100, 200, 0, 300, 100, 400, 100]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0,
                   disposal=1, optimize=False)
    data = buf.getvalue()
    return data


def video_goldens(gif_path):
    proc = Ernie4_5_VLMoeVideoProcessor(draw_on_frames=False)
    proc_fps2 = Ernie4_5_VLMoeVideoProcessor(draw_on_frames=False, fps=2)
    files = []
    names = sorted(os.listdir(os.path.join(MEDIA, "video")))
    paths = [("video/" + n, os.path.join(MEDIA, "video", n)) for n in names] + [("fixture:av/anim_7f.gif", gif_path)]
    for rel, path in paths:
        entry = {"file": rel, "default": processor_run(proc, path), "fps2": processor_run(proc_fps2, path)}
        d = entry["default"]
        n = len(d["frame_indices"])
        picks = sorted({d["frame_indices"][0], d["frame_indices"][n // 2], d["frame_indices"][-1]})
        frames = VideoDecoder(path, seek_mode="exact").get_frames_at(indices=picks).data
        entry["thumbs8"] = {str(i): thumb8(f.permute(1, 2, 0).numpy()) for i, f in zip(picks, frames)}
        files.append(entry)

    grid = []
    combos = [
        (48, 12.0, {}), (15, 5.0, {}), (7, 30.0, {}), (16, 30.0, {}), (17, 30.0, {}), (1000, 30.0, {}),
        (100000, 29.97, {}), (1000, 30.0, {"fps": 2}), (1000, 29.97, {"fps": 2}), (100, 23.976, {"fps": 1.5}),
        (300, 25.0, {"fps": 0.5}), (181, 24.0, {}), (361, 24.0, {}), (5000, 60.0, {"fps": 3}),
        (90, 30.0, {"num_frames": 16}), (90, 30.0, {"num_frames": 33}), (1, 24.0, {}),
        (123457, 30.0, {"fps": 2}), (50, 10.0, {"min_frames": 4, "max_frames": 10}),
        (1000, 30.0, {"fps": 2, "min_frames": 4, "max_frames": 30}),
    ]
    for total, fps_meta, kw in combos:
        md = VideoMetadata(total_num_frames=total, fps=fps_meta)
        idx = proc.sample_frames(md, **kw)
        md.frames_indices = idx
        ts = md.timestamps
        grid.append({"total": total, "video_fps": fps_meta, "kwargs": kw, "indices": [int(i) for i in idx],
                     "timestamp_text": [proc._convert_timestamp(t) for t in ts]})

    sizes = []
    for h, w in [(240, 320), (320, 240), (144, 256), (720, 1280), (1080, 1920), (2160, 3840), (100, 3000),
                 (28, 28), (1, 150), (480, 854), (1920, 1080)]:
        try:
            rh, rw = smart_resize(h, w, 28, min_pixels=299 * 28 * 28, max_pixels=1196 * 28 * 28)
            sizes.append({"h": h, "w": w, "resized": [rh, rw]})
        except ValueError as e:
            sizes.append({"h": h, "w": w, "error": str(e)})

    overlays = []
    proc_font = Ernie4_5_VLMoeVideoProcessor(font=FONT)
    for (w, h, text) in [(320, 240, "time: 00:00:01.25"), (256, 144, "time: 00:00:02.80"),
                         (1280, 720, "time: 01:02:05.50"), (240, 320, "time: 00:00:03.92")]:
        frame = torch.full((3, h, w), 128, dtype=torch.uint8)
        drawn = proc_font._render_image_with_timestamp(frame, text).permute(1, 2, 0).numpy()
        font_size = int(min(w, h) * 0.1)
        ch, cw = min(h, int(font_size * 1.6)), min(w, int(font_size * 11))
        crop = np.ascontiguousarray(drawn[:ch, :cw])
        name = f"overlay_{w}x{h}.png"
        buf = io.BytesIO()
        Image.fromarray(crop).save(buf, format="PNG", optimize=True)
        overlays.append({"width": w, "height": h, "text": text, "crop": name, "crop_hw": [ch, cw],
                         "untouched_below_crop": bool((drawn[ch:] == 128).all() and (drawn[:, cw:] == 128).all()),
                         "png": buf.getvalue()})
    return {"files": files, "sample_frames": grid, "smart_resize": sizes}, overlays


def main():
    check = "--check" in sys.argv[1:]
    torch.manual_seed(0)
    gif = make_gif(None)
    os.makedirs(OUT_DIR, exist_ok=True)
    gif_path = os.path.join(OUT_DIR, "anim_7f.gif")
    outputs = {gif_path: gif}
    if not check:
        with open(gif_path, "wb") as f:
            f.write(gif)
    audio = audio_goldens()
    video, overlays = video_goldens(gif_path if not check else gif_path)
    video["overlays"] = [{k: v for k, v in o.items() if k != "png"} for o in overlays]
    for o in overlays:
        outputs[os.path.join(OUT_DIR, o["crop"])] = o["png"]
    doc = {
        "generator": "tests/reference/make_audio_video_goldens.py",
        "versions": {k: v[0] for k, v in PINNED.items()},
        "audio": audio,
        "video": video,
    }
    text = json.dumps(doc, indent=1, sort_keys=True) + "\n"
    outputs[OUT_JSON] = text.encode()
    total = sum(len(b) for b in outputs.values())
    assert total < 1_000_000, f"goldens are {total} bytes"
    if check:
        bad = [p for p, b in outputs.items() if not os.path.exists(p) or open(p, "rb").read() != b]
        if bad:
            sys.exit("differs: " + ", ".join(bad))
        print(f"ok: {len(outputs)} files match ({total} bytes)")
        return
    for p, b in outputs.items():
        with open(p, "wb") as f:
            f.write(b)
    print(f"wrote {len(outputs)} files, {total} bytes")


if __name__ == "__main__":
    main()
