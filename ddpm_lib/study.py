"""The study this repository reproduces, in numbers: its Table 1 and Table 2, and where its code
departs from what it reports. One home for these facts; the ``full`` profile, notebook 06, the
metrics tables and the report all read them from here.
"""

from __future__ import annotations

# Table 1 of the study: its hyperparameters (what each means is in config.py).
TABLE1 = {
    "batch_size": 32,
    "epochs": 200,
    "lr": 3e-4,
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "num_steps": 1000,
    "cosine_s": 0.008,
    "ddim_steps": 5,
    "prediction": "eps",  # not in its table: Ho et al.'s choice, which its code follows
    "loss": "mse",
}

# Table 2: its best result. The network and schedule that produced it are not stated.
RESULT = {
    "network": "not stated",
    "schedule": "not stated",
    "sampler": "DDIM-5",
    "FID": 92.47,
    "KID mean": 0.2089,
    "KID std": None,
    "steps": 28_000,
    "hours": 8,
    "device": "P100 (theirs)",
    "note": "the study's numbers: uncropped 299 px real images vs 64 px samples, per-batch KID",
}

# Where the study's code departs from its report (or from the papers), each corrected here.
DEPARTURES = (
    "the report says images are cropped to the bounding box; the code resizes the short side and crops at random",
    "its cosine schedule uses s as a floor (alphas_cumprod at T is 0.008, about 9% of the signal's amplitude "
    "survives) while sampling starts from pure noise",
    "KID was hand-written and averaged per batch; real images were uncropped and resized to 299 px, generated "
    "ones were 64 px DDIM-5 samples",
    "no exponential moving average of the weights",
    "timesteps drawn from 1..T-1 instead of all T steps",
)
