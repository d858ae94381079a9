//! Tokens of C expressions, each with the 1-based column it starts at.

use super::error::ParseError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tok {
    Ident(String),
    Int {
        value: u128,
        unsigned: bool,
        long: bool,
    },
    Char(u8),
    Str(Vec<u8>),
    Punct(&'static str),
    End,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub tok: Tok,
    pub column: usize,
}

impl Tok {
    /// How the token is shown in messages: `'&&'`, `identifier "x"`...
    pub fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("\"{s}\""),
            Tok::Int { value, .. } => format!("number {value}"),
            Tok::Char(_) => "a character literal".into(),
            Tok::Str(_) => "a string literal".into(),
            Tok::Punct(p) => format!("'{p}'"),
            Tok::End => "the end of the expression".into(),
        }
    }
}

/// Longest first, so that `<<` is not read as two `<`.
const PUNCTS: [&str; 33] = [
    "->", "<<", ">>", "<=", ">=", "==", "!=", "&&", "||", "++", "--", "+", "-", "*", "/", "%", "<",
    ">", "&", "|", "^", "!", "~", "(", ")", "[", "]", ".", ",", "?", ":", "=", ";",
];

pub fn tokenize(text: &str) -> Result<Vec<Token>, ParseError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let err = |message: String| ParseError { column, message };
        let tok = if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            Tok::Ident(chars[start..i].iter().collect())
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            number(&word).ok_or_else(|| err(format!("invalid number \"{word}\"")))?
        } else if c == '\'' {
            let (bytes, next) = quoted(&chars, i, '\'').map_err(err)?;
            i = next;
            match bytes.as_slice() {
                [b] => Tok::Char(*b),
                _ => return Err(err("a character literal holds exactly one character".into())),
            }
        } else if c == '"' {
            let (bytes, next) = quoted(&chars, i, '"').map_err(err)?;
            i = next;
            Tok::Str(bytes)
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let p = PUNCTS
                .iter()
                .find(|p| rest.starts_with(*p))
                .ok_or_else(|| err(format!("unexpected character '{c}'")))?;
            i += p.len();
            Tok::Punct(p)
        };
        out.push(Token { tok, column });
    }
    out.push(Token {
        tok: Tok::End,
        column: chars.len() + 1,
    });
    Ok(out)
}

/// A C integer literal: decimal, `0x` hex, `0b` binary, `0` octal, with
/// `u`/`l`/`ll` suffixes in any case and order.
fn number(word: &str) -> Option<Tok> {
    let lower = word.to_ascii_lowercase();
    let digits_end = lower.trim_end_matches(['u', 'l']).len();
    let (body, suffix) = lower.split_at(digits_end);
    let (digits, radix) = if let Some(h) = body.strip_prefix("0x") {
        (h, 16)
    } else if let Some(b) = body.strip_prefix("0b") {
        (b, 2)
    } else if body.len() > 1 && body.starts_with('0') {
        (&body[1..], 8)
    } else {
        (body, 10)
    };
    if digits.is_empty() || suffix.matches('u').count() > 1 || suffix.matches('l').count() > 2 {
        return None;
    }
    let value = u128::from_str_radix(&digits.replace('_', ""), radix).ok()?;
    Some(Tok::Int {
        value,
        unsigned: suffix.contains('u'),
        long: suffix.contains('l'),
    })
}

/// The bytes of a quoted literal starting at `chars[start]` (the quote)
/// and the index after its closing quote.
fn quoted(chars: &[char], start: usize, quote: char) -> Result<(Vec<u8>, usize), String> {
    let mut bytes = Vec::new();
    let mut i = start + 1;
    loop {
        let Some(&c) = chars.get(i) else {
            return Err(format!("missing closing {quote}"));
        };
        i += 1;
        if c == quote {
            return Ok((bytes, i));
        }
        if c != '\\' {
            let mut buf = [0u8; 4];
            bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        let Some(&e) = chars.get(i) else {
            return Err(format!("missing closing {quote}"));
        };
        i += 1;
        let b = match e {
            'n' => b'\n',
            't' => b'\t',
            'r' => b'\r',
            'a' => 7,
            'b' => 8,
            'f' => 12,
            'v' => 11,
            'e' => 27,
            '\\' | '\'' | '"' | '?' => e as u8,
            'x' => {
                let start = i;
                while i < chars.len() && chars[i].is_ascii_hexdigit() && i - start < 2 {
                    i += 1;
                }
                let hex: String = chars[start..i].iter().collect();
                u8::from_str_radix(&hex, 16).map_err(|_| "\\x needs hex digits".to_string())?
            }
            '0'..='7' => {
                let start = i - 1;
                while i < chars.len() && ('0'..='7').contains(&chars[i]) && i - start < 3 {
                    i += 1;
                }
                let oct: String = chars[start..i].iter().collect();
                u8::from_str_radix(&oct, 8).map_err(|_| "octal escape out of range".to_string())?
            }
            other => return Err(format!("unknown escape \\{other}")),
        };
        bytes.push(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        tokenize(s).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn numbers_chars_strings() {
        assert_eq!(
            toks("0x1F 010 7ul 0b11"),
            vec![
                Tok::Int {
                    value: 31,
                    unsigned: false,
                    long: false
                },
                Tok::Int {
                    value: 8,
                    unsigned: false,
                    long: false
                },
                Tok::Int {
                    value: 7,
                    unsigned: true,
                    long: true
                },
                Tok::Int {
                    value: 3,
                    unsigned: false,
                    long: false
                },
                Tok::End
            ]
        );
        assert_eq!(
            toks(r"'\n' '\0' 'A'")[..3],
            [Tok::Char(10), Tok::Char(0), Tok::Char(65)]
        );
        assert_eq!(toks(r#""a\x41""#)[0], Tok::Str(b"aA".to_vec()));
        assert_eq!(toks("a->b<<=c")[1], Tok::Punct("->"));
        assert_eq!(tokenize("1 @").unwrap_err().column, 3);
        assert_eq!(tokenize("0x").unwrap_err().column, 1);
        assert!(tokenize("'ab'").is_err());
        assert!(tokenize("\"abc").is_err());
    }
}
