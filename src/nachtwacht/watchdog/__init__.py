"""Who watches the watchman: the dead man's switch and `nachtwacht doctor`."""
