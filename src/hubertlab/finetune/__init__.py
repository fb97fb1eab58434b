"""Using a fine-tuned model: inference (VTC turns of long recordings, CTC transcripts),
post-processing (window averaging, thresholds, turns), frame F1, and the transformers export.
Its data readers live in hubertlab.data, its model in hubertlab.models.finetune."""
