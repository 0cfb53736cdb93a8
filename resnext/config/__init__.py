"""The config wing: typed schemas for every group, the closed choices, "did you mean" and tool arguments.

The bottom wing: it imports no other part of resnext, so every wing may refuse a value with its ConfigError.
"""
