//! `libreprise_cov.so`: what a program built with
//! `-fsanitize-coverage=trace-pc` links against (`-lreprise_cov`), so that
//! it links and runs on its own. Its hook does nothing; under `reprise
//! record` or `replay` the agent, preloaded, defines the same symbol and
//! the dynamic loader binds the program's calls to the agent's.

/// Called at each basic block of an instrumented program: nothing here.
#[no_mangle]
pub extern "C" fn __sanitizer_cov_trace_pc() {}
