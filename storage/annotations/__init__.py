"""Annotations: conversations with their messages, feedback and tags."""
