"""Plots: image grids with titles and boxes. Draws what it is given; computes nothing."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def image_grid(
    images: Sequence[np.ndarray],
    titles: Sequence[str] | None = None,
    boxes: Sequence[Sequence[float]] | None = None,
    columns: int = 6,
    size: float = 2.0,
    title: str = "",
):
    """A matplotlib figure of images in a grid.

    Args:
        images: each (H, W, 3) or (H, W) uint8, sizes may differ.
        titles: one per image (e.g. species names), optional.
        boxes: one (x, y, width, height) per image, drawn as a red rectangle, optional.
        columns: images per row; size: inches per image.
        title: a title over the whole grid (laid out above the top row), optional.
    Returns:
        the figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    rows = max(1, (len(images) + columns - 1) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * size, rows * size), squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index >= len(images):
            continue
        image = images[index]
        axis.imshow(image, cmap="gray" if image.ndim == 2 else None)
        if titles is not None:
            axis.set_title(titles[index].replace("_", " "), fontsize=7)
        if boxes is not None:
            x, y, w, h = boxes[index]
            axis.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="red", linewidth=1.2))
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()  # after the suptitle, so the top row makes room for it
    return fig


def label_points(axis, xs: Sequence[float], ys: Sequence[float], labels: Sequence[str], fontsize: float = 7):
    """Label each point (x, y) of a line plot beside it; labels of points close together are moved
    apart (``reporting.separate_annotations``) instead of printed over each other ("ww=2=3")."""
    from ddpm_lib.show.reporting import separate_annotations

    for x, y, label in zip(xs, ys, labels):
        axis.annotate(label, (x, y), xytext=(3, 3), textcoords="offset points", fontsize=fontsize)
    separate_annotations(axis.figure)


def save_image_grid(images_uint8, path, columns: int | None = None):
    """Save uint8 images (B, C, H, W) (a tensor or array) as one PNG grid; returns the path."""
    from pathlib import Path

    from PIL import Image

    images = np.asarray(images_uint8.cpu() if hasattr(images_uint8, "cpu") else images_uint8)
    b, c, h, w = images.shape
    columns = columns or int(np.ceil(np.sqrt(b)))
    rows = (b + columns - 1) // columns
    grid = np.zeros((rows * h, columns * w, c), dtype=np.uint8)
    for index, image in enumerate(images.transpose(0, 2, 3, 1)):
        row, column = divmod(index, columns)
        grid[row * h:(row + 1) * h, column * w:(column + 1) * w] = image
    Image.fromarray(grid.squeeze(-1) if c == 1 else grid).save(path)
    return Path(path)


# ----- interactive explorers (ipywidgets 7.7 and 8) ------------------------------------------------
# Every frame is computed once, encoded as PNG bytes, and the slider only swaps which bytes an
# ipywidgets.Image shows: no model call and no plotting on a slider move, so it responds at once
# even on Colab's free tier. Only widgets and calls present in ipywidgets 7.7 and 8 are used.


def png_bytes(image_uint8: np.ndarray, scale: int = 1) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 image, enlarged ``scale`` times with nearest neighbours."""
    import io

    from PIL import Image

    picture = Image.fromarray(np.ascontiguousarray(image_uint8))
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def _image_widget(png: bytes):
    """An ipywidgets.Image sized to its picture (so a flex box does not stretch it)."""
    import io

    import ipywidgets as widgets
    from PIL import Image

    width, height = Image.open(io.BytesIO(png)).size
    return widgets.Image(format="png", value=png, layout=widgets.Layout(width=f"{width}px", height=f"{height}px"))


class _CurveWithMarker:
    """A line plot rendered once; per-frame copies get a vertical marker drawn into the pixels."""

    def __init__(self, x: np.ndarray, curves: dict, ylabel: str, log_y: bool = False, size=(3.4, 2.6)):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=size, dpi=90)  # not pyplot: nothing is shown, the pixels are kept
        FigureCanvasAgg(fig)
        axis = fig.add_subplot(1, 1, 1)
        for label, values in curves.items():
            axis.plot(x, values, label=label)
        if log_y:
            axis.set_yscale("log")
        axis.set_xlabel("t")
        axis.set_ylabel(ylabel)
        if len(curves) > 1:
            axis.legend(fontsize=7)
        fig.tight_layout()
        fig.canvas.draw()
        self.pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
        self.transform = axis.transData
        self.height = self.pixels.shape[0]
        self.top, self.bottom = axis.get_window_extent().y1, axis.get_window_extent().y0

    def frame(self, t: float) -> np.ndarray:
        """The plot with a red vertical line at ``t``."""
        image = self.pixels.copy()
        column = int(round(self.transform.transform((t, 1.0))[0]))
        rows = slice(int(self.height - self.top), int(self.height - self.bottom))
        image[rows, max(column - 1, 0):column + 1] = (220, 30, 30)
        return image


class ForwardExplorer:
    """A slider over t (0..T) showing x_t ~ q(x_t | x_0) beside alphas_cumprod with t marked.

    Args:
        images: clean standardized images (K, C, H, W) to choose from.
        schedules: name -> ``NoiseSchedule`` (e.g. linear and cosine), all with the same T.
        mean, std: per-channel statistics, to turn standardized values back into pixels.
        stride: the slider's step in t (frames exist for t = 0, stride, 2 stride, ..., T).
        seed: the noise eps, fixed per image so the frames form one smooth path.
        scale: on-screen enlargement of the 64x64 images.
    The frame for t uses x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, with abar_0 = 1 (the clean
    image) and abar_t = ``alphas_cumprod[t - 1]`` for t >= 1 (the paper's step t).
    """

    def __init__(self, images, schedules: dict, mean, std, stride: int = 10, seed: int = 0, scale: int = 3):
        import torch

        from ddpm_lib.transforms import to_uint8_hwc

        images = torch.as_tensor(images).double()
        num_steps = {s.num_steps for s in schedules.values()}
        if len(num_steps) != 1:
            raise ValueError(f"schedules must share T, got {sorted(num_steps)}")
        self.num_steps = num_steps.pop()
        self.times = list(range(0, self.num_steps + 1, stride))
        if self.times[-1] != self.num_steps:
            self.times.append(self.num_steps)
        noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        self.frames: dict[tuple[str, int], list[bytes]] = {}
        self.curves = {}
        for name, schedule in schedules.items():
            abar = torch.cat([torch.ones(1, dtype=torch.float64), schedule.alphas_cumprod.cpu()])
            weights = abar[self.times].reshape(-1, 1, 1, 1)
            for index in range(images.shape[0]):
                x_t = weights.sqrt() * images[index] + (1 - weights).sqrt() * noise[index]  # (frames, C, H, W)
                pixels = to_uint8_hwc(x_t, mean, std)
                self.frames[(name, index)] = [png_bytes(p, scale) for p in pixels]
            self.curves[name] = abar.numpy()
        self.plot = _CurveWithMarker(np.arange(self.num_steps + 1), self.curves, "alphas_cumprod")
        self.plot_frames = [png_bytes(self.plot.frame(t)) for t in self.times]
        self._build(list(schedules), images.shape[0], stride)

    def frame_index(self, t: int) -> int:
        """Index into the precomputed frames for slider value ``t``."""
        return self.times.index(t)

    def _build(self, names: list[str], count: int, stride: int) -> None:
        import ipywidgets as widgets

        self.slider = widgets.IntSlider(value=0, min=0, max=self.num_steps, step=stride, description="t",
                                        continuous_update=True)
        self.schedule = widgets.Dropdown(options=names, value=names[0], description="schedule")
        self.image_choice = widgets.Dropdown(options=list(range(count)), value=0, description="image")
        self.image = _image_widget(self.frames[(names[0], 0)][0])
        self.curve = _image_widget(self.plot_frames[0])
        self.label = widgets.Label()
        for control in (self.slider, self.schedule, self.image_choice):
            control.observe(self._update, names="value")
        self._update()
        self.widget = widgets.VBox([widgets.HBox([self.slider, self.schedule, self.image_choice]),
                                    widgets.HBox([self.image, self.curve], layout=widgets.Layout(align_items="center")),
                                    self.label])

    def _update(self, change=None) -> None:
        t = self.slider.value
        if t not in self.times:  # a value between frames (typed in): snap to the nearest frame
            t = min(self.times, key=lambda value: abs(value - t))
        index = self.frame_index(t)
        self.image.value = self.frames[(self.schedule.value, self.image_choice.value)][index]
        self.curve.value = self.plot_frames[index]
        abar = self.curves[self.schedule.value][t]
        self.label.value = (f"t = {t}: alphas_cumprod = {abar:.3g}, signal rate {abar ** 0.5:.3f}, "
                            f"noise rate {(1 - abar) ** 0.5:.3f}")

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


class BackwardExplorer:
    """A slider over the steps of stored sampling trajectories: x_t and the predicted x0 side by side.

    Args:
        trajectories: name (e.g. "DDPM", "DDIM-50") -> ``sampling.Trajectory``.
        mean, std: per-channel statistics.
        sample: which image of the batch to show.
    """

    def __init__(self, trajectories: dict, mean, std, sample: int = 0, scale: int = 3):
        from ddpm_lib.transforms import to_uint8_hwc

        self.timesteps = {name: list(tr.timesteps) for name, tr in trajectories.items()}
        self.frames = {}
        for name, trajectory in trajectories.items():
            x_t = to_uint8_hwc(trajectory.x_t[:, sample], mean, std)
            x0 = to_uint8_hwc(trajectory.pred_x0[:, sample], mean, std)
            self.frames[name] = ([png_bytes(p, scale) for p in x_t], [png_bytes(p, scale) for p in x0])
        self._build(list(trajectories))

    def _build(self, names: list[str]) -> None:
        import ipywidgets as widgets

        self.sampler = widgets.Dropdown(options=names, value=names[0], description="sampler")
        self.slider = widgets.IntSlider(value=0, min=0, max=len(self.timesteps[names[0]]) - 1, description="step")
        self.x_t = _image_widget(self.frames[names[0]][0][0])
        self.x0 = _image_widget(self.frames[names[0]][1][0])
        self.label = widgets.Label()
        self.slider.observe(self._update, names="value")
        self.sampler.observe(self._change_sampler, names="value")
        self._update()
        self.widget = widgets.VBox([widgets.HBox([self.sampler, self.slider]),
                                    widgets.HBox([widgets.VBox([widgets.Label("x_t"), self.x_t]),
                                                  widgets.VBox([widgets.Label("predicted x0"), self.x0])]),
                                    self.label])

    def _change_sampler(self, change=None) -> None:
        self.slider.max = len(self.timesteps[self.sampler.value]) - 1
        self.slider.value = min(self.slider.value, self.slider.max)
        self._update()

    def _update(self, change=None) -> None:
        name, step = self.sampler.value, self.slider.value
        self.x_t.value = self.frames[name][0][step]
        self.x0.value = self.frames[name][1][step]
        total = len(self.timesteps[name])
        self.label.value = f"{name}: sampling step {step + 1} of {total}, t = {self.timesteps[name][step]}"

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


class SDEditExplorer:
    """Where the forward process meets the backward one (SDEdit, Meng et al. 2021): a slider over t
    showing a test image x0, the forward process's x_t at t, and what the sampler makes of x_t when
    it starts there. Small t keeps the image; large t leaves too little of it, and the sampler invents
    another.

    Args:
        images: clean standardized images (K, C, H, W) to choose from.
        alphas_cumprod: the run's schedule, (T,) (index t is the paper's step t + 1).
        denoise_from: ``denoise_from(x_t, step) -> x0``: the sampler started at timestep ``step``
            (0..T-1) from x_t (K, C, H, W) float32, returning standardized images (K, C, H, W), e.g.
            ``sampling.sample(..., start_step=step)``. Called once per frame, before any slider moves.
        mean, std: per-channel statistics, to turn standardized values back into pixels.
        stride: the slider's step in t (frames exist for t = 0, stride, 2 stride, ..., T).
        seed: the noise eps of the forward process, fixed per image, so the frames form one path.
        sampler: how the label names the sampler (e.g. "DDIM eta 1").
        scale: on-screen enlargement.
    The frame for t shows x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (abar_0 = 1: t = 0 is x0 itself, and
    nothing is denoised) and ``denoise_from(x_t, t - 1)``.
    """

    def __init__(self, images, alphas_cumprod, denoise_from, mean, std, stride: int = 10, seed: int = 0,
                 sampler: str = "", scale: int = 3):
        import torch

        from ddpm_lib.transforms import to_uint8_hwc

        images = torch.as_tensor(images).double()
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64).cpu()
        self.num_steps, self.sampler = len(abar), sampler
        self.abar = torch.cat([torch.ones(1, dtype=torch.float64), abar]).numpy()  # indexed by t = 0..T
        self.times = list(range(0, self.num_steps + 1, stride))
        if self.times[-1] != self.num_steps:
            self.times.append(self.num_steps)
        noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        self.originals = to_uint8_hwc(images, mean, std)  # (K, H, W, 3)
        noised, edited = [], []
        for t in self.times:
            weight = float(self.abar[t])
            x_t = weight ** 0.5 * images + (1 - weight) ** 0.5 * noise  # q(x_t | x_0), Eq. 4
            noised.append(to_uint8_hwc(x_t, mean, std))
            out = images if t == 0 else torch.as_tensor(denoise_from(x_t.float(), t - 1)).double().cpu()
            edited.append(to_uint8_hwc(out, mean, std))
        self.noised, self.edited = np.stack(noised), np.stack(edited)  # (frames, K, H, W, 3)
        self.frames = {(index, i): (png_bytes(self.noised[i, index], scale), png_bytes(self.edited[i, index], scale))
                       for index in range(images.shape[0]) for i in range(len(self.times))}
        self.original_frames = [png_bytes(image, scale) for image in self.originals]
        self._build(images.shape[0], stride)

    def frame_index(self, t: int) -> int:
        """Index into the precomputed frames for slider value ``t``."""
        return self.times.index(t)

    def _build(self, count: int, stride: int) -> None:
        import ipywidgets as widgets

        self.slider = widgets.IntSlider(value=0, min=0, max=self.num_steps, step=stride, description="t",
                                        continuous_update=True)
        self.image_choice = widgets.Dropdown(options=list(range(count)), value=0, description="image")
        self.original = _image_widget(self.original_frames[0])
        self.x_t = _image_widget(self.frames[(0, 0)][0])
        self.result = _image_widget(self.frames[(0, 0)][1])
        self.label = widgets.Label()
        for control in (self.slider, self.image_choice):
            control.observe(self._update, names="value")
        self._update()
        panels = [widgets.VBox([widgets.Label(text), image]) for text, image in
                  (("x0, a test image", self.original), ("x_t: noised to t (forward)", self.x_t),
                   ("denoised from t (backward)", self.result))]
        self.widget = widgets.VBox([widgets.HBox([self.slider, self.image_choice]), widgets.HBox(panels), self.label])

    def _update(self, change=None) -> None:
        t = self.slider.value
        if t not in self.times:  # a value between frames (typed in): snap to the nearest frame
            t = min(self.times, key=lambda value: abs(value - t))
        index = self.image_choice.value
        self.original.value = self.original_frames[index]
        self.x_t.value, self.result.value = self.frames[(index, self.frame_index(t))]
        abar = self.abar[t]
        self.label.value = ("t = 0: the test image itself, nothing to denoise" if t == 0 else
                            f"t = {t}: signal rate {abar ** 0.5:.3f}, noise rate {(1 - abar) ** 0.5:.3f}; "
                            f"{self.sampler + ' ' if self.sampler else ''}denoised from t")

    def figure(self, times: Sequence[int], indices: Sequence[int] = (0,), size: float = 1.1):
        """The static form: for each image, a row of x_t ("noised") and a row of its denoising, at ``times``."""
        panels, titles = [], []
        for index in indices:
            for row, name in ((self.noised, "noised"), (self.edited, "denoised")):
                for t in times:
                    panels.append(row[self.frame_index(t), index])
                    titles.append(f"{name}, t={t}")
        sampler = f" with {self.sampler}" if self.sampler else ""
        return image_grid(panels, titles, columns=len(times), size=size,
                          title=f"SDEdit: noised to t (forward process), then denoised from t{sampler}")

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


class GuidanceExplorer:
    """A species dropdown and a guidance slider over precomputed samples of a conditional run.

    Args:
        frames: {(species index, w): uint8 images (K, H, W, 3)}: the same start noise for every
            species and w, so moving the slider shows what guidance alone changes.
        species_names: names in species-index order.
        scale: on-screen enlargement.
    """

    def __init__(self, frames: dict, species_names: list[str], scale: int = 2):
        self.species = sorted({key[0] for key in frames})
        self.weights = sorted({key[1] for key in frames})
        self.names = species_names
        self.frames = {key: png_bytes(self._row(images), scale) for key, images in frames.items()}
        self._build()

    @staticmethod
    def _row(images) -> np.ndarray:
        images = np.asarray(images)
        return np.concatenate(list(images), axis=1)  # (H, K * W, 3)

    def _build(self) -> None:
        import ipywidgets as widgets

        self.choice = widgets.Dropdown(options=[(self.names[i].replace("_", " "), i) for i in self.species],
                                       value=self.species[0], description="species")
        self.slider = widgets.SelectionSlider(options=[f"{w:g}" for w in self.weights],
                                              value=f"{self.weights[0]:g}", description="guidance w",
                                              continuous_update=True)
        first = self.frames[(self.species[0], self.weights[0])]
        self.image = _image_widget(first)
        self.label = widgets.Label()
        for control in (self.choice, self.slider):
            control.observe(self._update, names="value")
        self._update()
        self.widget = widgets.VBox([widgets.HBox([self.choice, self.slider]), self.image, self.label])

    def _update(self, change=None) -> None:
        w = float(self.slider.value)
        self.image.value = self.frames[(self.choice.value, w)]
        self.label.value = (f"{self.names[self.choice.value].replace('_', ' ')}, w = {w:g} "
                            f"({'unconditional' if w == 0 else 'plain conditional' if w == 1 else 'guided'})")

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


def process_strip(frames_uint8: Sequence[np.ndarray], labels: Sequence[str], title: str = ""):
    """One row of images with a label under each: the static form of an explorer (Figure 5)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(frames_uint8), figsize=(1.1 * len(frames_uint8), 1.5), squeeze=False)
    for axis, frame, label in zip(axes[0], frames_uint8, labels):
        axis.imshow(frame)
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_xlabel(label, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
