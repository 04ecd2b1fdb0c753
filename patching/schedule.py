"""The noise schedule Apply Motion Module samples with: the betas the motion module was trained with (and for
AnimateLCM its LCM sampling), as an object patch of the clone's `model_sampling`, and an OUTER_SAMPLE wrapper
that checks when sampling starts that no node placed after Apply Motion Module replaced it."""
import functools
from dataclasses import dataclass
from types import SimpleNamespace

import comfy.model_sampling
import comfy.patcher_extension
import torch

from ..errors import AnimateDiffError
from ..motion_module import Family, MotionModelSpec, MotionVersion

KEY = "animatediff_schedule"  # wrapper key


class BetaSchedule:
    AUTOSELECT = "autoselect"                  # the schedule the motion module was trained with (LCM's too)
    ANIMATEDIFF_LINEAR = "animatediff_linear"  # linear 0.00085 → 0.012 ("sqrt_linear" in LDM naming)
    SD_SCALED_LINEAR = "sd_scaled_linear"      # SD1.5's and SDXL's own ("linear" in LDM naming)
    USE_EXISTING = "use_existing"              # keep the model's schedule (e.g. one set by another node)
    ANIMATELCM = "animatelcm"                  # AnimateLCM's LCM sampling, for any module (its diffusers file)
    ANIMATEDIFF_SDXL = "animatediff_sdxl"      # AnimateDiff SDXL's: scaled linear 0.00085 → 0.020
    ALL = [AUTOSELECT, ANIMATEDIFF_LINEAR, SD_SCALED_LINEAR, USE_EXISTING, ANIMATELCM, ANIMATEDIFF_SDXL]

    # (LDM name, last beta); all start at 0.00085. AnimateLCM's are linear, with the end its LCM_SCHEDULES says.
    BETAS = {ANIMATEDIFF_LINEAR: ("sqrt_linear", 0.012), SD_SCALED_LINEAR: ("linear", 0.012),
             ANIMATEDIFF_SDXL: ("linear", 0.020), ANIMATELCM: ("sqrt_linear", 0.012)}


def trained_schedule(spec: MotionModelSpec) -> str:
    """The betas a motion module was trained with: HotshotXL SDXL's own, AnimateDiff SDXL its config's, and every
    SD1.5 release AnimateDiff's linear ones (AnimateLCM's are distilled on linear betas too, AnimateLCM-I2V's
    ending at 0.014: its LCM sampling has that end, LCM_SCHEDULES)."""
    if spec.version == MotionVersion.HOTSHOTXL:
        return BetaSchedule.SD_SCALED_LINEAR
    return BetaSchedule.ANIMATEDIFF_SDXL if spec.base == Family.SDXL else BetaSchedule.ANIMATEDIFF_LINEAR


# AnimateLCM's inference configs: LCM over this many of the 1000 training timesteps, on linear betas to this end
LCM_SCHEDULES = {MotionVersion.ANIMATELCM: (100, 0.012), MotionVersion.ANIMATELCM_I2V: (200, 0.014)}


@functools.cache
def animatelcm_sampling(original_timesteps: int = 100) -> type:
    """How AnimateLCM samples (its inference config): consistency steps, with LCM's boundary condition, on 100
    of the 1000 training timesteps (9, 19, ..., 999; AnimateLCM-I2V: 200, 4, 9, ..., 999). ComfyUI's own LCM
    classes, as its ModelSamplingDiscrete node combines them, only over these timesteps where that node takes
    50."""
    # imported here: it imports ComfyUI's `nodes`, which the pack's pure sampling paths do not need
    from comfy_extras.nodes_model_advanced import LCM, ModelSamplingDiscreteDistilled

    class AnimateLCMSampling(ModelSamplingDiscreteDistilled, LCM):
        pass
    AnimateLCMSampling.original_timesteps = original_timesteps
    return AnimateLCMSampling


def with_beta_schedule(patcher, schedule: str, spec: MotionModelSpec):
    """Sets `schedule` on the clone `patcher` for a motion module of `spec`, keeping the prediction type and zsnr
    of the model's schedule before (before an earlier Apply Motion Module's, when there was one)."""
    outer = comfy.patcher_extension.WrappersMP.OUTER_SAMPLE
    earlier = next((w.__self__ for w in patcher.get_wrappers(outer, KEY)
                    if isinstance(getattr(w, "__self__", None), ScheduleKept)), None)
    patcher.remove_wrappers_with_key(outer, KEY)  # an earlier Apply Motion Module's check, if any
    if schedule == BetaSchedule.USE_EXISTING:
        return
    requested = schedule
    current = patcher.get_model_object("model_sampling")
    if earlier is not None and current is earlier.model_sampling:
        current = earlier.replaced  # an earlier Apply Motion Module's schedule: start from what it replaced
    if not isinstance(current, comfy.model_sampling.ModelSamplingDiscrete):
        raise AnimateDiffError(f"beta_schedule={schedule} sets betas, which only a discrete-time model has; this "
                               "model samples in continuous time (as Playground v2.5 does, or as a node such as "
                               "ModelSamplingContinuousEDM or ModelSamplingContinuousV sets). Use "
                               "beta_schedule=use_existing to keep that.")
    sampling = type(current)
    if schedule == BetaSchedule.AUTOSELECT:
        schedule = BetaSchedule.ANIMATELCM if spec.version in LCM_SCHEDULES else trained_schedule(spec)
    ldm_name, linear_end = BetaSchedule.BETAS[schedule]
    # AnimateLCM's are distilled for LCM sampling on linear betas (its diffusers-format file loads as v2, and
    # the animatelcm choice gives it the same)
    if schedule == BetaSchedule.ANIMATELCM:
        original_timesteps, linear_end = LCM_SCHEDULES.get(spec.version, LCM_SCHEDULES[MotionVersion.ANIMATELCM])
        sampling = animatelcm_sampling(original_timesteps)
    settings = dict(patcher.model.model_config.sampling_settings)
    # zsnr (zero terminal SNR, e.g. set by the core ModelSamplingDiscrete node) rescales whichever betas are used
    settings.update(beta_schedule=ldm_name, linear_start=0.00085, linear_end=linear_end,
                    zsnr=bool(getattr(current, "zsnr", False)))
    ours = sampling(SimpleNamespace(sampling_settings=settings))
    patcher.add_object_patch("model_sampling", ours)
    # a ModelSampling node placed after this one would silently sample with SD1.5's betas again: refuse that
    patcher.add_wrapper_with_key(outer, KEY, ScheduleKept(ours, requested, current).check)


@dataclass(frozen=True)
class ScheduleKept:
    """At sampling: the model still samples with the schedule Apply Motion Module set."""
    model_sampling: object
    schedule: str
    replaced: object  # the model's schedule before, for an Apply Motion Module after this one

    def check(self, executor, *args, **kwargs):
        current = executor.class_obj.model_patcher.get_model_object("model_sampling")
        ours = self.model_sampling
        # the same object, or (should a ComfyUI copy it) the same sigmas: another schedule would differ in them
        kept = current is ours or (getattr(current, "sigmas", None) is not None
                                   and current.sigmas.shape == ours.sigmas.shape
                                   and torch.equal(current.sigmas.cpu(), ours.sigmas.cpu()))
        if not kept:
            raise AnimateDiffError(
                "A node after AnimateDiff_ApplyMotionModule (such as ModelSamplingDiscrete) replaced the noise "
                f"schedule set there (beta_schedule={self.schedule}), so the animation would sample with other "
                "betas, often washed out. Put that node before Apply Motion Module (its prediction type and zsnr "
                "are kept on the motion module's schedule), or set beta_schedule to use_existing.")
        return executor(*args, **kwargs)
