#!/usr/bin/env python3
"""The picture of docs/listen-and-look.md: the waveform and the spectrogram of the same piece
rendered with each voice, one above the other (needs numpy and matplotlib; docs only).

    scripts/spectrogram.py OUT.png SECONDS LABEL=A.wav LABEL=B.wav ...
"""
import sys
import wave

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def read(path, seconds):
    with wave.open(path) as w:
        rate, n = w.getframerate(), w.getnframes()
        x = np.frombuffer(w.readframes(n), dtype="<i2").reshape(-1, w.getnchannels()).astype(np.float32) / 32768.0
    return rate, x.mean(axis=1)[: int(seconds * rate)]


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    out, seconds, pairs = sys.argv[1], float(sys.argv[2]), [a.split("=", 1) for a in sys.argv[3:]]
    fig, axes = plt.subplots(2 * len(pairs), 1, figsize=(11, 3.2 * len(pairs)), gridspec_kw={"height_ratios": [1, 2.2] * len(pairs)})
    for k, (label, path) in enumerate(pairs):
        rate, x = read(path, seconds)
        t = np.arange(len(x)) / rate
        wave_ax, spec_ax = axes[2 * k], axes[2 * k + 1]
        wave_ax.plot(t, x, lw=0.3, color="#1f4e79")
        wave_ax.set_xlim(0, seconds)
        wave_ax.set_ylim(-1, 1)
        wave_ax.set_ylabel("level")
        wave_ax.set_title(label, loc="left", fontsize=10)
        wave_ax.set_xticklabels([])
        # 4096-point Hann windows every 512 samples; dB relative to the loudest bin; 30 Hz to 8 kHz.
        n, hop = 4096, 512
        win = np.hanning(n)
        frames = np.lib.stride_tricks.sliding_window_view(x, n)[::hop] * win
        s = np.abs(np.fft.rfft(frames, axis=1)).T
        db = 20 * np.log10(s / s.max() + 1e-9)
        f = np.fft.rfftfreq(n, 1 / rate)
        keep = (f >= 30) & (f <= 8000)
        spec_ax.pcolormesh(np.arange(db.shape[1]) * hop / rate, f[keep], db[keep], vmin=-80, vmax=0, cmap="magma", shading="auto")
        spec_ax.set_yscale("log")
        spec_ax.set_ylabel("Hz")
        spec_ax.set_xlim(0, seconds)
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(out, dpi=90)


if __name__ == "__main__":
    main()
