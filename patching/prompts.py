"""A Prompt Schedule's frame count, checked against the latent's when sampling starts: ComfyUI repeats or cuts a
conditioning batch to fit the latent batch, which would restart the schedule or drop its later prompts."""
from ..errors import AnimateDiffError

SCHEDULE_FRAMES = "animatediff_schedule_frames"  # in a Prompt Schedule's conditioning dict
KEY = "animatediff_prompts"                      # wrapper key


def check_prompt_schedules(executor, noise, *args, **kwargs):
    """OUTER_SAMPLE wrapper: every scheduled prompt batch has one prompt per frame of the latent."""
    frames = noise.shape[0]
    for conds in executor.class_obj.conds.values():
        scheduled = {c[SCHEDULE_FRAMES] for c in conds if c.get(SCHEDULE_FRAMES, frames) != frames}
        if scheduled:
            raise AnimateDiffError(
                f"AnimateDiff_PromptSchedule made prompts for {min(scheduled)} frames, but the latent holds {frames}: "
                f"set the schedule's frames to {frames} (the latent's batch_size), or the batch_size to "
                f"{min(scheduled)}. ComfyUI would repeat or cut the prompts to fit, restarting the schedule or "
                "dropping its later keyframes.")
    return executor(noise, *args, **kwargs)
