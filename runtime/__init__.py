"""omnienc.runtime."""
