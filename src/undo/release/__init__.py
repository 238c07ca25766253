"""A finished run's model, released: a clean `save_pretrained` folder with a Hugging Face
model card stating what the run measured, and the evidence files beside it
(`undo export`)."""

from .export import ExportError, choose_model, export_model, push_folder

__all__ = ["ExportError", "choose_model", "export_model", "push_folder"]
