//! Function and block entries (`func` and `bb` sketches) come by the
//! million, one ring slot each, mostly in long stretches of one thread.
//! The drain gathers each stretch into one trace record holding the
//! entries' addresses, so that the trace writer and its compressor handle
//! a record per stretch, not per entry (readers see the entries).

use reprise_abi::EventKind;
use reprise_schema::EventRecord;

/// Entries at most in one record.
const MAX_RUN: usize = 4096;

/// The stretch being gathered.
#[derive(Default)]
pub struct CodeRun {
    first: Option<EventRecord>,
    objects: Vec<u64>,
    sites: Vec<u64>,
}

impl CodeRun {
    /// True for a function or block entry: one, or a run of them the agent
    /// gathered (their pairs in its data).
    pub fn holds(ev: &EventRecord) -> bool {
        matches!(ev.kind, EventKind::FuncEntry | EventKind::Block)
    }

    /// True if `ev` comes right after the run, from its thread, of its kind.
    pub fn continues(&self, ev: &EventRecord) -> bool {
        self.first.as_ref().is_some_and(|f| {
            f.process == ev.process
                && f.thread == ev.thread
                && f.kind == ev.kind
                && f.seq + self.objects.len() as u64 == ev.seq
        })
    }

    /// Starts a run at `ev` (the run must be empty) or extends it.
    pub fn add(&mut self, ev: EventRecord) {
        self.objects.push(ev.object);
        self.sites.push(ev.arg0);
        if self.first.is_none() {
            self.first = Some(ev);
        }
    }

    /// [`CodeRun::add`] for a run the agent gathered: `ev` stands for
    /// `count` entries whose (address, call site) pairs are its data.
    pub fn add_gathered(&mut self, mut ev: EventRecord, count: u64) {
        let pairs = std::mem::take(&mut ev.data);
        let word = |i: usize| {
            pairs
                .get(i * 8..i * 8 + 8)
                .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
        };
        for i in 0..count as usize {
            let entry = EventRecord {
                seq: ev.seq + i as u64,
                object: word(2 * i),
                arg0: word(2 * i + 1),
                ..ev.clone()
            };
            self.add(entry);
        }
    }

    /// True if the run holds room for `n` more entries.
    pub fn has_room(&self, n: u64) -> bool {
        self.objects.len() as u64 + n <= MAX_RUN as u64
    }

    /// The run gathered so far, emptied: its first event, the entries'
    /// addresses and call sites.
    pub fn take(&mut self) -> Option<(EventRecord, Vec<u64>, Vec<u64>)> {
        let first = self.first.take()?;
        Some((
            first,
            std::mem::take(&mut self.objects),
            std::mem::take(&mut self.sites),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(seq: u64, thread: u32, addr: u64) -> EventRecord {
        EventRecord {
            seq,
            thread,
            kind: EventKind::Block,
            object: addr,
            ..Default::default()
        }
    }

    #[test]
    fn a_run_is_one_threads_consecutive_entries() {
        let mut r = CodeRun::default();
        r.add(block(10, 1, 0x100));
        assert!(r.continues(&block(11, 1, 0x104)));
        assert!(!r.continues(&block(11, 2, 0x104)), "another thread");
        assert!(!r.continues(&block(12, 1, 0x104)), "an event between");
        r.add(block(11, 1, 0x104));
        let (first, objects, _) = r.take().unwrap();
        assert_eq!((first.seq, objects), (10, vec![0x100, 0x104]));
        assert!(r.take().is_none());
    }
}
