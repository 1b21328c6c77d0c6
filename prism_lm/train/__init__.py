"""Training: the loop, schedules, parallel wrappers, resumable state and metrics."""
