"""The core every editing method shares: schedules, prompts, images, buffers, model dispatch, memory plans."""
