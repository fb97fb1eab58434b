"""Fine-tuning data: RTTM/UEM files, frame targets, training windows, post-processing, CTC text."""
