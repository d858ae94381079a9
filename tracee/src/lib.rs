//! A traced process as the supervisor sees it: typed remote addresses
//! ([`RemotePtr`]), its memory ([`MemoryReader`]), its address-space layout
//! ([`MemoryMap`]), backtraces of crashed or live threads ([`Symbolizer`],
//! [`snapshot_threads`], [`backtrace_live`]).
//!
//! Backtraces work from registers plus some memory: either a
//! [`StackSnapshot`] saved by the agent at a crash (`reprise_abi::CrashInfo`,
//! the process being dead by then) or a live process ([`ProcessMemory`]).

pub mod access_points;
mod error;
mod live;
mod maps;
mod memory;
pub mod process;
mod remote_ptr;
mod symbolizer;
pub mod variables;

pub use access_points::{access_points, disassemble, Disassembler};
pub use error::{Result, TraceeError};
pub use live::{backtrace_live, snapshot_and_backtrace, snapshot_threads, ThreadSnapshot};
pub use maps::{parse_maps, LoadSegment, Mapping, MemoryMap};
pub use memory::{MemoryReader, ProcessMemory, StackSnapshot};
pub use remote_ptr::RemotePtr;
pub use symbolizer::{
    load_segments, Frame, FrameRegs, Symbolizer, UnwindMethod, UnwoundFrame, MAX_FRAMES,
};
pub use variables::Variables;
