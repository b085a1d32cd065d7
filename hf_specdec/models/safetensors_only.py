"""Loading without unpickling for the project's diffusers models."""


class SafetensorsOnlyMixin:
    """Put before diffusers' `ModelMixin`: `from_pretrained` defaults to `use_safetensors=True`, so a folder or repo
    holding only a pickled `diffusion_pytorch_model.bin` raises instead of being unpickled."""

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        kwargs.setdefault("use_safetensors", True)
        return super().from_pretrained(*args, **kwargs)
