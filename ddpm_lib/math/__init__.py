"""The math of diffusion: noise schedules (``schedules``), the forward process and the loss
(``diffusion``), and the samplers (``sampling``). Any network is a callable here; nothing in this
folder imports a network, the data, the settings or plotting."""
