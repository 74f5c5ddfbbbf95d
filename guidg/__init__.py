"""GuiDG and the baseline fine-tuning methods for CLIP-style models, on open_clip."""
