@0xa18bbe19a28cca4b;
# The reprise trace format.
#
# A trace is a directory:
#   header    one framed chunk holding a `Header`
#   events    a stream of framed chunks, each an `EventChunk`
#   outcome   one framed chunk holding an `Outcome` (absent in a cut-short trace)
#   schedule  one framed chunk holding a `Schedule` (once a reproducing schedule is known)
#   incomplete  present while the trace is being written
#
# Evolve this file by adding fields with new ordinals; never renumber or
# reuse an ordinal. Bump `formatVersion` (in `lib.rs`) when a reader of an
# older version could misread a newer trace.
# Paths, argv and environment are Data: they are not guaranteed UTF-8.

struct Header {
  formatVersion @0 :UInt32;
  repriseVersion @1 :Text;
  programPath @2 :Data;        # absolute path of the executable
  programDigest @3 :Data;      # SHA-256 of the executable's bytes
  buildId @4 :Data;            # ELF NT_GNU_BUILD_ID, empty if none
  argv @5 :List(Data);
  env @6 :List(Data);
  cwd @7 :Data;
  sketchLevel @8 :SketchLevel;
  machine @9 :Text;            # uname -m and host name
  kernel @10 :Text;            # uname -sr
  cpus @11 :UInt32;
  startTimeUnixNs @12 :UInt64;
  recordedEvents @13 :UInt32;  # what the agent logged beyond the level: bits of `RecordedEvents` (0 in older traces)
  blockPeriod @14 :UInt32;     # bb sketches: every N-th block of a thread is logged (0 in other sketches)
  chaos @15 :Bool;             # recorded with `record --chaos`: threads paused at random points
}

enum SketchLevel {
  sync @0;   # synchronisation operations
  sys @1;    # + system calls and their results
  func @2;   # + function entries
  bb @3;     # + basic blocks
}

# The numbering matches `reprise_abi::EventKind`.
enum EventKind {
  mutexLock @0;
  mutexTrylock @1;
  mutexUnlock @2;
  condWait @3;
  condWake @4;
  condSignal @5;
  condBroadcast @6;
  rwRdlock @7;
  rwWrlock @8;
  rwTryrdlock @9;
  rwTrywrlock @10;
  rwUnlock @11;
  semWait @12;
  semTrywait @13;
  semPost @14;
  barrierWait @15;
  spinLock @16;
  spinTrylock @17;
  spinUnlock @18;
  once @19;
  threadCreate @20;
  threadStart @21;
  threadExit @22;
  threadJoin @23;
  fork @24;
  processStart @25;
  exec @26;
  syscall @27;
  dataMore @28;
  signal @29;
  processExit @30;
  mutexTimedlock @31;
  funcEntry @32;
  block @33;
}

# One sketch event. `seq` is the global sequence number: the order of all
# events of all threads of all processes.
struct Event {
  seq @0 :UInt64;
  process @1 :UInt16;    # logical process index, 0 = the program started
  thread @2 :UInt32;     # logical thread index within the process, 0 = main
  kind @3 :EventKind;
  object @4 :UInt64;     # sync object address, or syscall number
  arg0 @5 :UInt64;
  arg1 @6 :UInt64;
  result @7 :Int64;
  extra @8 :UInt64;      # tid / pid for start events
  data @9 :Data;         # memory written by a syscall, bytes written to output
  repeat @10 :UInt64;    # 0 or 1: one event. N > 1: this record stands for the N
                         # events seq, seq+1, ..., seq+N-1 of this thread on this
                         # object, their kinds alternating `kind`, `altKind`
                         # (a run of uncontended lock/unlock pairs), results 0.
                         # For kind funcEntry or block (format 2): N entries of
                         # that kind, their objects in `data` as N little-endian
                         # u64s, then (funcEntry) their arg0s as N more
  altKind @11 :EventKind;
}

struct EventChunk {
  events @0 :List(Event);
}

struct Frame {
  pc @0 :UInt64;
  function @1 :Text;     # demangled where possible, empty if unknown
  file @2 :Data;         # source file, empty if unknown
  line @3 :UInt32;
  module @4 :Data;       # the ELF object holding pc
  offset @5 :UInt64;     # pc relative to the module's load address
}

struct ThreadState {
  process @0 :UInt16;
  thread @1 :UInt32;
  tid @2 :Int32;
  waitingOn @3 :UInt64;          # 0 if not blocked in a recorded operation
  waitKind @4 :EventKind;
  held @5 :List(UInt64);         # locks held
  backtrace @6 :List(Frame);
}

struct OutputStream {
  fd @0 :Int32;
  length @1 :UInt64;
  digest @2 :UInt64;      # FNV-1a 64 of all bytes
  keptBytes @3 :UInt64;   # how many leading bytes the events carry
}

enum OutcomeKind {
  exited @0;      # normal exit, see exitCode
  signaled @1;    # killed by a fatal signal
  assertion @2;   # assert() failed (also signaled by SIGABRT)
  deadlock @3;    # a cycle of threads waiting for locks held by each other
  hang @4;        # no progress for the hang timeout, no lock cycle
  interrupted @5; # reprise was interrupted (Ctrl-C) and the program stopped
  unknown @6;
  wrongOutput @7; # exited, but stdout differs from the expected output given at record
}

# The failure signature of a run.
struct Outcome {
  kind @0 :OutcomeKind;
  exitCode @1 :Int32;
  signal @2 :Int32;
  signalCode @3 :Int32;
  faultAddr @4 :UInt64;
  pc @5 :UInt64;
  registers @6 :List(UInt64);     # rax rbx rcx rdx rsi rdi rbp rsp r8-r15 rip eflags
  process @7 :UInt16;             # failing process and thread
  thread @8 :UInt32;
  backtrace @9 :List(Frame);      # of the failing thread
  assertion @10 :Text;
  threads @11 :List(ThreadState); # for hangs and deadlocks
  cycle @12 :List(UInt64);        # deadlock: the locks of the cycle, in wait order
  output @13 :List(OutputStream);
  eventCount @14 :UInt64;
  durationNs @15 :UInt64;
  droppedEvents @16 :UInt64;
  summary @17 :Text;              # one line for humans
  expectedOutput @18 :Data;       # the correct stdout (record --expect-output); empty if none given
  outputLine @19 :UInt32;         # wrongOutput: 1-based line of stdout that first differs from it
  outputLineStart @20 :UInt64;    # wrongOutput: byte offset in stdout where that line starts
}

# A reproducing schedule: everything an attempt's interleaving depends on
# beyond the sketch.
struct Schedule {
  strategy @0 :Text;
  seed @1 :UInt64;
  attempts @2 :UInt32;           # attempts it took to find
  decisions @3 :List(Decision);
  flips @4 :List(Flip);          # races flipped (feedback strategy)
  preemptRate @5 :UInt32;        # random strategy: preemption chance at an access, /65536
  oddThread @6 :UInt32;          # the one thread that runs against the strategy's policy
                                 # (late under feedback, early under feedback-lazy):
                                 # its thread index + 1 in process oddProcess; 0: none
  oddProcess @7 :UInt16;
}

struct Flip {
  # Thread `held` waits before its `heldN`-th access at `heldPc` (ELF
  # address of the instruction) until thread `until` made its `untilN`-th
  # access at `untilPc`. Occurrences count accesses off the thread's stack.
  heldProcess @0 :UInt16;
  heldThread @1 :UInt32;
  heldPc @2 :UInt64;
  heldN @3 :UInt32;
  untilProcess @4 :UInt16;
  untilThread @5 :UInt32;
  untilPc @6 :UInt64;
  untilN @7 :UInt32;
  defer @8 :Bool;                # `held` resumes at `until`'s next event, not at once
  untilFork @9 :UInt64;          # nonzero: process + 1; the flip completes when the parent has forked it
  untilAddr @10 :UInt64;         # nonzero: the flip completes at another thread's write to these 8 bytes
  standing @11 :Bool;            # with untilAddr: every later read there of the old value waits again
  # Nonzero: `heldN` and `untilN` are ignored; the access is the `heldK`-th
  # (`untilK`-th) at its instruction since its thread's event at ring
  # position `heldAnchor - 2` (`untilAnchor - 2`; 1: before the thread's
  # first event). Counted so, a flip means the same access when another flip
  # earlier in the run changed how many times a loop went round.
  heldAnchor @12 :UInt64;
  heldK @13 :UInt32;
  untilAnchor @14 :UInt64;
  untilK @15 :UInt32;
}

struct Decision {
  # Before global event `beforeSeq` (or at a preemption point of `thread`
  # after `occurrence` executions of `pc`), run `process`/`thread`.
  beforeSeq @0 :UInt64;
  process @1 :UInt16;
  thread @2 :UInt32;
  pc @3 :UInt64;
  occurrence @4 :UInt64;
}
