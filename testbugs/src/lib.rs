//! The corpus of buggy multithreaded programs: manifest, build, native failure rates.
