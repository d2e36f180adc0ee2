"""omnienc.encoders."""
