"""Scheduler names (ours and AUTOMATIC1111's) and swapping a pipeline's scheduler by name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from portraitforge.errors import ParameterError


@dataclass(frozen=True)
class SchedulerSpec:
    class_name: str
    options: dict[str, Any]
    a1111: str  # the sampler name AUTOMATIC1111 writes in its `parameters` chunk


SCHEDULERS: dict[str, SchedulerSpec] = {
    "ddim": SchedulerSpec("DDIMScheduler", {}, "DDIM"),
    "pndm": SchedulerSpec("PNDMScheduler", {}, "PLMS"),
    "lms": SchedulerSpec("LMSDiscreteScheduler", {}, "LMS"),
    "euler": SchedulerSpec("EulerDiscreteScheduler", {}, "Euler"),
    "euler_a": SchedulerSpec("EulerAncestralDiscreteScheduler", {}, "Euler a"),
    "heun": SchedulerSpec("HeunDiscreteScheduler", {}, "Heun"),
    "dpm++_2m": SchedulerSpec("DPMSolverMultistepScheduler", {"use_karras_sigmas": False}, "DPM++ 2M"),
    "dpm++_2m_karras": SchedulerSpec("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}, "DPM++ 2M Karras"),
    "dpm++_2m_sde": SchedulerSpec(
        "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": False}, "DPM++ 2M SDE"
    ),
    "dpm++_2m_sde_karras": SchedulerSpec(
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True},
        "DPM++ 2M SDE Karras",
    ),
    "unipc": SchedulerSpec("UniPCMultistepScheduler", {}, "UniPC"),
    "lcm": SchedulerSpec("LCMScheduler", {}, "LCM"),
}


def scheduler_label(scheduler: Any) -> tuple[str, str]:
    """(our name, A1111 sampler name) of a loaded scheduler instance."""
    class_name = type(scheduler).__name__
    config = getattr(scheduler, "config", {})
    karras = bool(config.get("use_karras_sigmas", False))
    sde = "sde" in str(config.get("algorithm_type", ""))
    for name, spec in SCHEDULERS.items():
        if spec.class_name != class_name:
            continue
        if spec.class_name == "DPMSolverMultistepScheduler" and (
            spec.options.get("use_karras_sigmas") != karras or ("algorithm_type" in spec.options) != sde
        ):
            continue
        return name, spec.a1111
    return class_name, class_name


def set_scheduler(pipe: Any, name: str) -> None:
    """Swap the scheduler by name, keeping the model's own config (betas, prediction type, spacing)."""
    import diffusers

    key = name.strip().lower().replace(" ", "_")
    spec = SCHEDULERS.get(key)
    if spec is None:
        if hasattr(diffusers, name) and name.endswith("Scheduler"):
            spec = SchedulerSpec(name, {}, name)
        else:
            raise ParameterError(f"unknown scheduler '{name}' (one of: {', '.join(SCHEDULERS)})")
    cls = getattr(diffusers, spec.class_name)
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **spec.options)
