//! A run's stdout against the correct output the user gave
//! (`record --expect-output FILE`): a program that exits normally but
//! prints a wrong result (a lost update in a total) has failed too, and
//! the place of that failure is the first stdout line that differs.

use reprise_schema::{OutcomeInfo, OutcomeKind};

/// Longest part of a differing line kept for the summary.
const LINE_KEEP: usize = 200;

/// Compares stdout with the expected output as it is written, so that
/// output beyond what the trace keeps is compared too.
#[derive(Debug, Clone)]
pub struct OutputCheck {
    expected: Vec<u8>,
    /// Bytes of stdout seen so far.
    pos: u64,
    /// Offset of the first byte that differs from the expected output.
    first_diff: Option<u64>,
    /// The program's bytes from the first difference to the end of its line.
    got_rest: Vec<u8>,
}

/// Where a run's stdout first departs from the expected output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// 1-based line number.
    pub line: u32,
    /// Byte offset in stdout where that line starts.
    pub line_start: u64,
    /// That line as the program printed it, and as it should read.
    pub got: String,
    pub expected: String,
}

impl OutputCheck {
    pub fn new(expected: Vec<u8>) -> OutputCheck {
        OutputCheck {
            expected,
            pos: 0,
            first_diff: None,
            got_rest: Vec::new(),
        }
    }

    /// The next bytes the program wrote to stdout.
    pub fn feed(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        if self.first_diff.is_none() {
            let start = self.pos as usize;
            let same = rest
                .iter()
                .zip(self.expected.get(start..).unwrap_or(&[]))
                .take_while(|(a, b)| a == b)
                .count();
            if same < rest.len() {
                self.first_diff = Some(self.pos + same as u64);
            }
            rest = &rest[same..];
        }
        if self.first_diff.is_some() && !self.got_rest.ends_with(b"\n") {
            let room = LINE_KEEP.saturating_sub(self.got_rest.len());
            let end = rest
                .iter()
                .position(|&b| b == b'\n')
                .map_or(rest.len(), |i| i + 1)
                .min(room);
            self.got_rest.extend_from_slice(&rest[..end]);
        }
        self.pos += bytes.len() as u64;
    }

    /// Where stdout differs from the expected output, once the program has
    /// ended (a stdout that stops short differs where it stops).
    pub fn difference(&self) -> Option<Difference> {
        let at = match self.first_diff {
            Some(at) => at,
            None if (self.pos as usize) < self.expected.len() => self.pos,
            None => return None,
        } as usize;
        let before = &self.expected[..at.min(self.expected.len())];
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let line = before.iter().filter(|&&b| b == b'\n').count() as u32 + 1;
        let expected_line = self.expected[line_start..]
            .split(|&b| b == b'\n')
            .next()
            .unwrap_or(&[]);
        let mut got = before[line_start..].to_vec();
        got.extend(self.got_rest.iter().take_while(|&&b| b != b'\n'));
        let text = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(LINE_KEEP)]).into_owned();
        Some(Difference {
            line,
            line_start: line_start as u64,
            got: text(&got),
            expected: text(expected_line),
        })
    }

    /// Marks a run that exited normally with a wrong stdout as a
    /// wrong-output failure, and keeps the expected output in the outcome
    /// (replay compares its attempts with it).
    pub fn judge(&self, o: &mut OutcomeInfo) {
        o.expected_output = self.expected.clone();
        let clean = o.kind == OutcomeKind::Exited && o.signal == 0 && o.assertion.is_empty();
        if let (true, Some(d)) = (clean, self.difference()) {
            o.kind = OutcomeKind::WrongOutput;
            o.output_line = d.line;
            o.output_line_start = d.line_start;
            o.summary = format!("got {:?}, expected {:?}", d.got, d.expected);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(expected: &str, writes: &[&str]) -> Option<Difference> {
        let mut c = OutputCheck::new(expected.as_bytes().to_vec());
        for w in writes {
            c.feed(w.as_bytes());
        }
        c.difference()
    }

    #[test]
    fn finds_the_first_differing_line_across_writes() {
        assert_eq!(check("work=60\nrefs=0\n", &["work=60\n", "refs=0\n"]), None);
        let d = check("work=60\nrefs=0\n", &["work=6", "0\nref", "s=-1\n"]).unwrap();
        assert_eq!((d.line, d.line_start), (2, 8));
        assert_eq!((d.got.as_str(), d.expected.as_str()), ("refs=-1", "refs=0"));
    }

    #[test]
    fn short_and_long_outputs_differ() {
        let d = check("a\nb\n", &["a\n"]).unwrap();
        assert_eq!((d.line, d.got.as_str(), d.expected.as_str()), (2, "", "b"));
        let d = check("a\n", &["a\nextra\n"]).unwrap();
        assert_eq!(
            (d.line, d.got.as_str(), d.expected.as_str()),
            (2, "extra", "")
        );
    }

    #[test]
    fn judge_leaves_crashes_alone() {
        let c = {
            let mut c = OutputCheck::new(b"ok\n".to_vec());
            c.feed(b"bad\n");
            c
        };
        let mut o = OutcomeInfo {
            kind: OutcomeKind::Exited,
            ..OutcomeInfo::default()
        };
        c.judge(&mut o);
        assert_eq!((o.kind, o.output_line), (OutcomeKind::WrongOutput, 1));
        let mut o = OutcomeInfo {
            kind: OutcomeKind::Signaled,
            signal: 11,
            ..OutcomeInfo::default()
        };
        c.judge(&mut o);
        assert_eq!(o.kind, OutcomeKind::Signaled);
        assert_eq!(o.expected_output, b"ok\n");
    }
}
