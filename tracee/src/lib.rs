//! A traced process: spawning with the agent, RemotePtr, memory, registers, backtraces.
