"""omnienc.configs."""
