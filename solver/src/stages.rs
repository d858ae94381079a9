//! The stages of the solver's questions on one base, from the narrowest
//! (the reads of an object two threads now share, an address-determining
//! read) to the widest (every thread's last 32 stretches).

/// Levels of focus deepening: the last 2, 4, ... 2^(DEPTHS+1) stretches.
pub(crate) const DEPTHS: usize = 4;

/// What a query looks at (see `Solver::ask` in `search`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// The focus thread's last 2 << level stretches.
    Stretches(usize),
    /// Any thread's reads of the locations the focus thread read.
    ByLocation,
    /// Every thread's last 2 << level stretches.
    Everyone(usize),
    /// The k-th address-determining read.
    Address(usize),
    /// The focus thread's reads of the object an address-determining read
    /// was made to share (the base's first query).
    Object,
}

impl std::fmt::Display for Stage {
    /// What the attempt log says a query asked about.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stretches = |l: usize| 2usize << l.min(DEPTHS);
        match *self {
            Stage::Stretches(l) => {
                write!(f, "the failing thread's last {} stretches", stretches(l))
            }
            Stage::ByLocation => write!(f, "every thread's reads of what the failing thread read"),
            Stage::Everyone(l) => write!(f, "every thread's last {} stretches", stretches(l)),
            Stage::Address(k) => write!(f, "address-determining read {}", k + 1),
            Stage::Object => write!(f, "the failing thread's reads of the object now shared"),
        }
    }
}

/// The stages in the order they are tried, `addresses` address-determining
/// reads known; with no focus thread (a hang, a deadlock), every thread's.
pub(crate) fn stages(focus_thread: bool, addresses: usize, object: bool) -> Vec<Stage> {
    let levels = DEPTHS + 1;
    let mut out = Vec::new();
    if object {
        out.push(Stage::Object);
    }
    if focus_thread {
        out.extend((0..addresses).map(Stage::Address));
        out.extend((0..levels).map(Stage::Stretches));
        out.push(Stage::ByLocation);
        out.extend((0..levels).map(Stage::Everyone));
    } else {
        out.extend((0..levels).map(Stage::Everyone));
        out.extend((0..addresses).map(Stage::Address));
    }
    out
}
