"""omnienc.tools."""
