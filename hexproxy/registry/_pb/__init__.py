"""Protobuf code generated from ../hex_registry.proto; do not edit (see README.md to regenerate)."""
