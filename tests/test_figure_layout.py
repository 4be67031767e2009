"""Figures without overlaps: each kind of figure the notebooks and the report draw, saved through
``save_figure``, then measured with matplotlib's renderer (``fig.canvas.draw()``,
``artist.get_window_extent()``): no two texts (stamp, suptitle, titles, axis labels, drawn tick
labels, annotations, legends) share pixels, and no text lies on an axes it does not belong to (a
suptitle over the top row of images, a stamp over an x label)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from ddpm_lib import paths  # noqa: E402
from ddpm_lib.config import get_profile  # noqa: E402
from ddpm_lib.show import reporting  # noqa: E402
from ddpm_lib.show.viz import image_grid, label_points, process_strip  # noqa: E402

RNG = np.random.default_rng(0)


def images(count, size=32):
    return [RNG.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(count)]


# ----- the measure ---------------------------------------------------------------------------------
def drawn_texts(fig) -> list[tuple[str, object, object]]:
    """(what, owner axes or None, box) of every text that is drawn: fig-level texts (the stamp, the
    suptitle), and per axes its title, axis labels, the tick labels inside its view, its texts and
    annotations, its legend's texts."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()

    def shown(text):
        return isinstance(text, Text) and text.get_visible() and text.get_text().strip()

    found = [("figure text", None, t) for t in fig.texts if shown(t) and t is not fig._suptitle]
    if fig._suptitle is not None and shown(fig._suptitle):
        found.append(("suptitle", None, fig._suptitle))
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        found += [("title", ax, t) for t in (ax.title, ax._left_title, ax._right_title) if shown(t)]
        found += [("text", ax, t) for t in ax.texts if shown(t)]
        legend = ax.get_legend()
        if legend is not None and legend.get_visible():
            found += [("legend", ax, t) for t in legend.get_texts() if shown(t)]
        if not ax.axison:
            continue
        for axis in (ax.xaxis, ax.yaxis):
            if not axis.get_visible():
                continue
            if shown(axis.label):
                found.append(("axis label", ax, axis.label))
            low, high = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if shown(tick.label1) and low <= tick.get_loc() <= high:
                    found.append(("tick label", ax, tick.label1))
    return [(what, owner, text.get_window_extent(renderer), text.get_text()) for what, owner, text in found]


def intersect(a, b) -> bool:
    return min(a.x1, b.x1) - max(a.x0, b.x0) > 1 and min(a.y1, b.y1) - max(a.y0, b.y0) > 1


def overlaps(fig) -> list[str]:
    texts = drawn_texts(fig)
    problems = []
    for i, (what, owner, box, label) in enumerate(texts):
        for other_what, other_owner, other_box, other_label in texts[i + 1:]:
            if what == other_what == "legend" and owner is other_owner:
                continue  # a legend lays out its own entries
            if intersect(box, other_box):
                problems.append(f"{what} {label!r} overlaps {other_what} {other_label!r}")
        for ax in fig.axes:  # no text on an axes it does not belong to
            if ax is not owner and ax.get_visible() and intersect(box, ax.get_window_extent()):
                problems.append(f"{what} {label!r} lies on another axes ({ax.get_title() or 'untitled'})")
    return problems


def stamp_of(fig):
    return next(box for what, _, box, label in drawn_texts(fig) if what == "figure text" and "profile:" in label)


@pytest.fixture
def save(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "FIGURES_DIR", tmp_path / "figures")
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path)
    config = get_profile("demo")

    def save_and_measure(fig, name="figure"):
        written = reporting.save_figure(fig, name, config)
        assert all(path.exists() for path in written)
        return overlaps(fig), stamp_of(fig)

    yield save_and_measure
    plt.close("all")


# ----- one figure of each kind the notebooks draw ---------------------------------------------------
def short_line_plot_with_log_y():
    """The loss curves (notebooks 03, 04, 06): a short figure, log y over less than a decade."""
    fig, ax = plt.subplots(figsize=(5, 2.6))
    steps = np.arange(0, 3600, 200)
    ax.plot(steps, 0.6 * np.exp(-steps / 4000) + 0.25, "o-", markersize=3, label="small_unet_cosine_v_mse")
    ax.plot(steps[:3], [0.58, 0.5, 0.47], "o-", markersize=3, label="small_unet_attention_cosine_v_mse")
    ax.set_xlabel("step")
    ax.set_ylabel("mse loss (v target)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    return fig


def loglog_panels():
    """The exact-denoiser study (notebook 05): log-log, steps 5..50, two panels sharing y."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), sharey=True)
    steps = [5, 10, 20, 50]
    for ax, name in zip(axes, ("linear", "cosine")):
        ax.loglog(steps, [0.63, 0.38, 0.21, 0.089], "o-", label="DDIM")
        ax.loglog(steps, [0.62, 0.35, 0.14, 0.016], "o-", label="DPM-Solver++")
        ax.set_title(f"{name} schedule", fontsize=9)
        ax.set_xlabel("steps (network calls)")
    axes[0].set_ylabel("relative error of the spread")
    axes[0].legend(fontsize=8)
    return fig


def grid_with_a_suptitle_added_after():
    """Figure 6 and the species grid (notebooks 06, 07): image_grid, then fig.suptitle."""
    fig = image_grid(images(24), columns=8, size=1.3)
    fig.suptitle("small_unet_cosine_v_mse, DDIM-50 eta 1", fontsize=9)
    return fig


def titled_grid():
    return image_grid(images(12), ["Azure_Finch", "", "", "", "Crimson_Warbler", "", "", "", "Golden", "", "", ""],
                      columns=4, size=1.2, title="DPM-Solver++-20 w=3")


def strip():
    """Figure 5 and the slerp strip (notebook 05)."""
    return process_strip(images(11), [f"t={t}" for t in range(0, 1001, 100)], "forward process q(x_t | x_0)")


def guidance_style_plot():
    """The guidance sweep (notebook 07): points close together labelled w=..., an image strip beside."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.3))
    kid = [0.031, 0.030, 0.0305, 0.029, 0.0302]
    accuracy = [0.62, 1.0, 1.0, 1.0, 1.0]
    axes[0].plot(kid, accuracy, "o-")
    label_points(axes[0], kid, accuracy, [f"w={w:g}" for w in (0, 1, 2, 3, 5)])
    axes[0].axhline(1.0, color="0.5", linestyle="--", label="real test images")
    axes[0].set_xlabel("KID, species-classifier features (lower: closer to the test set)")
    axes[0].set_ylabel("species accuracy")
    axes[0].legend(fontsize=7)
    axes[1].imshow(np.concatenate(images(5), axis=1))
    axes[1].set_title("Azure Finch, the same start noise, w = 0, 1, 2, 3, 5", fontsize=8)
    axes[1].axis("off")
    return fig


def histograms_without_layout():
    """The box statistics (notebook 01): two histograms, a short figure, no tight_layout of its own."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 2.8))
    axes[0].hist(RNG.uniform(0.1, 0.9, 500), bins=40)
    axes[0].set_xlabel("box area / image area")
    axes[1].hist(RNG.uniform(0.5, 2.5, 500), bins=40)
    axes[1].set_xlabel("box aspect (width / height)")
    return fig


def schedules_with_snr():
    """The schedules (notebook 05): three panels, log y over many decades, legends."""
    t = np.arange(1, 1001)
    abar = np.cos((t / 1000 + 0.008) / 1.008 * np.pi / 2) ** 2 + 1e-9
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
    for ax, values, label in zip(axes, (abar, abar, abar / (1 - abar)), ("alphas_cumprod", "alphas_cumprod (log)",
                                                                           "signal-to-noise ratio")):
        ax.plot(t, values, label="cosine")
        ax.set_ylabel(label)
        ax.set_xlabel("t")
        ax.legend(fontsize=7)
    axes[1].set_yscale("log")
    axes[2].set_yscale("log")
    return fig


def sdedit_rows():
    """The SDEdit figure (notebook 05, the report): rows of x_t and of its denoising, titled per panel."""
    import torch

    from ddpm_lib.show.viz import SDEditExplorer

    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    explorer = SDEditExplorer(images, torch.linspace(0.999, 1e-4, 1000), lambda x_t, step: 0.5 * x_t, [0.5] * 3,
                              [0.25] * 3, stride=50, sampler="stochastic DDIM")
    return explorer.figure([0, 100, 250, 500, 750, 1000], indices=[0, 1])


KINDS = [short_line_plot_with_log_y, loglog_panels, grid_with_a_suptitle_added_after, titled_grid, strip,
         guidance_style_plot, histograms_without_layout, schedules_with_snr, sdedit_rows]


@pytest.mark.parametrize("draw", KINDS, ids=lambda f: f.__name__)
def test_no_text_overlaps_another_or_an_axes_once_saved(save, draw):
    problems, stamp = save(draw())
    assert not problems, problems


@pytest.mark.parametrize("draw", KINDS, ids=lambda f: f.__name__)
def test_the_stamp_lies_below_everything_else(save, draw):
    fig = draw()
    problems, stamp = save(fig)
    others = [box for what, _, box, label in drawn_texts(fig) if "profile:" not in label]
    assert stamp.y1 <= min(box.y0 for box in others) + 1  # display y grows upwards
    assert all(stamp.y1 <= ax.get_window_extent().y0 for ax in fig.axes if ax.get_visible())


def test_the_measure_catches_what_it_should():
    """The overlap measure itself fails on overlapping figures (else the tests above prove nothing)."""
    fig, ax = plt.subplots(figsize=(4, 2))
    ax.set_xlabel("x label")
    fig.text(0.5, 0.01, "over the label", ha="center", va="bottom")
    fig.suptitle("title")
    fig.subplots_adjust(top=1.0, bottom=0.0)  # the suptitle on the axes, the labels off the figure
    problems = overlaps(fig)
    assert any("suptitle" in p and "another axes" in p for p in problems), problems
    fig2, ax2 = plt.subplots(figsize=(4, 3))
    ax2.plot([0.03, 0.0301], [1.0, 1.0], "o")
    for w in (1, 2):
        ax2.annotate(f"w={w}", (0.03, 1.0))
    assert any("text 'w=1' overlaps text 'w=2'" in p for p in overlaps(fig2))
    plt.close("all")
