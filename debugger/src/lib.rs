//! `reprise debug`: an interactive debugger over a reproduced run.
//!
//! The run is replayed deterministically under its saved schedule and
//! paused between sketch events; checkpoints let it seek backward and
//! bisect without re-executing from the start.
