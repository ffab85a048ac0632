"""The local demo: the whole pipeline on this machine, three scenarios, then files of your own."""
