//! The agent reprise injects into traced programs (LD_PRELOAD).
