"""Black-box tests of the cronium-runtime binary (service core and runtime API)."""
