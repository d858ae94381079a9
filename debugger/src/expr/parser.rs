//! C expressions: a precedence-climbing parser over [`super::lexer`]
//! tokens. Everything that would change the program (assignment, `++`,
//! calls) is refused with a message saying so.

use super::error::ParseError;
use super::lexer::{tokenize, Tok, Token};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryOp {
    Neg,
    Plus,
    Not,
    BitNot,
    Deref,
    AddrOf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Mul,
    Div,
    Rem,
    Add,
    Sub,
    Shl,
    Shr,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    BitAnd,
    BitXor,
    BitOr,
    And,
    Or,
}

impl BinaryOp {
    pub fn symbol(self) -> &'static str {
        use BinaryOp::*;
        match self {
            Mul => "*",
            Div => "/",
            Rem => "%",
            Add => "+",
            Sub => "-",
            Shl => "<<",
            Shr => ">>",
            Lt => "<",
            Le => "<=",
            Gt => ">",
            Ge => ">=",
            Eq => "==",
            Ne => "!=",
            BitAnd => "&",
            BitXor => "^",
            BitOr => "|",
            And => "&&",
            Or => "||",
        }
    }

    /// Binding strength (higher binds tighter), as in C.
    fn from_punct(p: &str) -> Option<(BinaryOp, u8)> {
        use BinaryOp::*;
        Some(match p {
            "||" => (Or, 1),
            "&&" => (And, 2),
            "|" => (BitOr, 3),
            "^" => (BitXor, 4),
            "&" => (BitAnd, 5),
            "==" => (Eq, 6),
            "!=" => (Ne, 6),
            "<" => (Lt, 7),
            "<=" => (Le, 7),
            ">" => (Gt, 7),
            ">=" => (Ge, 7),
            "<<" => (Shl, 8),
            ">>" => (Shr, 8),
            "+" => (Add, 9),
            "-" => (Sub, 9),
            "*" => (Mul, 10),
            "/" => (Div, 10),
            "%" => (Rem, 10),
            _ => return None,
        })
    }
}

/// A type named in a cast or `sizeof`: a base spelling (`unsigned long`,
/// `struct node`, a typedef name) and a number of `*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeName {
    pub base: String,
    pub pointers: usize,
}

/// A parsed expression; `column` is where it starts in the text (1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expr {
    pub kind: ExprKind,
    pub column: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExprKind {
    Ident(String),
    Int {
        value: u128,
        unsigned: bool,
        long: bool,
    },
    Char(u8),
    Str(Vec<u8>),
    Unary(UnaryOp, Box<Expr>),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    Member {
        base: Box<Expr>,
        field: String,
        arrow: bool,
    },
    Index(Box<Expr>, Box<Expr>),
    Cast(TypeName, Box<Expr>),
    SizeofType(TypeName),
    SizeofExpr(Box<Expr>),
}

/// Parses one C expression.
pub fn parse(text: &str) -> Result<Expr, ParseError> {
    let tokens = tokenize(text)?;
    let mut p = Parser { tokens, pos: 0 };
    if p.peek().tok == Tok::End {
        return Err(p.error_here("expected an expression".into()));
    }
    let e = p.binary(1, None)?;
    let t = p.peek().clone();
    match &t.tok {
        Tok::End => Ok(e),
        Tok::Punct("=") => Err(p.error_here(
            "assignment is not supported: expressions only read the program (did you mean '=='?)"
                .into(),
        )),
        Tok::Punct(q @ ("?" | ":")) => {
            Err(p.error_here(format!("the '{q}' operator is not supported")))
        }
        Tok::Punct(",") => Err(p.error_here("the ',' operator is not supported".into())),
        other => Err(p.error_here(format!(
            "unexpected {} after a complete expression",
            other.describe()
        ))),
    }
}

const TYPE_WORDS: [&str; 15] = [
    "void", "char", "short", "int", "long", "float", "double", "signed", "unsigned", "_Bool",
    "struct", "union", "enum", "const", "volatile",
];

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn peek_at(&self, k: usize) -> &Tok {
        &self.tokens[(self.pos + k).min(self.tokens.len() - 1)].tok
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn error_here(&self, message: String) -> ParseError {
        ParseError {
            column: self.peek().column,
            message,
        }
    }

    fn eat(&mut self, p: &str) -> bool {
        if matches!(self.peek().tok, Tok::Punct(q) if q == p) {
            self.next();
            true
        } else {
            false
        }
    }

    fn expect_close(
        &mut self,
        close: &'static str,
        open_col: usize,
        open: &str,
    ) -> Result<(), ParseError> {
        if self.eat(close) {
            return Ok(());
        }
        let found = self.peek().tok.describe();
        Err(self.error_here(format!(
            "expected '{close}' to close the '{open}' at column {open_col}, found {found}"
        )))
    }

    /// Binary operators binding at least `min`; `after` names the operator
    /// whose right side this is (for "expected an expression after ...").
    fn binary(&mut self, min: u8, after: Option<&str>) -> Result<Expr, ParseError> {
        let mut lhs = self.unary(after)?;
        while let Tok::Punct(p) = self.peek().tok {
            let Some((op, prec)) = BinaryOp::from_punct(p) else {
                break;
            };
            if prec < min {
                break;
            }
            self.next();
            let rhs = self.binary(prec + 1, Some(p))?;
            let column = lhs.column;
            lhs = Expr {
                kind: ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)),
                column,
            };
        }
        Ok(lhs)
    }

    fn unary(&mut self, after: Option<&str>) -> Result<Expr, ParseError> {
        let t = self.peek().clone();
        let op = match &t.tok {
            Tok::Punct("-") => Some(UnaryOp::Neg),
            Tok::Punct("+") => Some(UnaryOp::Plus),
            Tok::Punct("!") => Some(UnaryOp::Not),
            Tok::Punct("~") => Some(UnaryOp::BitNot),
            Tok::Punct("*") => Some(UnaryOp::Deref),
            Tok::Punct("&") => Some(UnaryOp::AddrOf),
            Tok::Punct(p @ ("++" | "--")) => {
                return Err(self.error_here(format!(
                    "'{p}' is not supported: expressions only read the program"
                )))
            }
            _ => None,
        };
        if let Some(op) = op {
            let sym = match &t.tok {
                Tok::Punct(p) => *p,
                _ => "",
            };
            self.next();
            let inner = self.unary(Some(sym))?;
            return Ok(Expr {
                kind: ExprKind::Unary(op, Box::new(inner)),
                column: t.column,
            });
        }
        if t.tok == Tok::Ident("sizeof".into()) {
            self.next();
            if self.peek().tok == Tok::Punct("(") && self.starts_type(1) {
                let open = self.next().column;
                let ty = self.type_name()?;
                self.expect_close(")", open, "(")?;
                return Ok(Expr {
                    kind: ExprKind::SizeofType(ty),
                    column: t.column,
                });
            }
            let inner = self.unary(Some("sizeof"))?;
            return Ok(Expr {
                kind: ExprKind::SizeofExpr(Box::new(inner)),
                column: t.column,
            });
        }
        if t.tok == Tok::Punct("(") && self.starts_type(1) {
            let open = self.next().column;
            let ty = self.type_name()?;
            self.expect_close(")", open, "(")?;
            let inner = self.unary(Some(")"))?;
            return Ok(Expr {
                kind: ExprKind::Cast(ty, Box::new(inner)),
                column: t.column,
            });
        }
        self.postfix(after)
    }

    /// Whether the token `k` ahead starts a type name: a type keyword, or a
    /// lone identifier that can only be a typedef name because of what
    /// follows it (`(size_t) x`, `(node_t *) p`).
    fn starts_type(&self, k: usize) -> bool {
        match self.peek_at(k) {
            Tok::Ident(w) if TYPE_WORDS.contains(&w.as_str()) => true,
            Tok::Ident(_) => {
                let mut j = k + 1;
                while self.peek_at(j) == &Tok::Punct("*") {
                    j += 1;
                }
                if self.peek_at(j) != &Tok::Punct(")") {
                    return false;
                }
                // `(a * )` can only be a cast; `(a)` is a cast when an
                // operand follows (`(a) b` is no expression otherwise).
                j > k + 1
                    || matches!(
                        self.peek_at(j + 1),
                        Tok::Ident(_)
                            | Tok::Int { .. }
                            | Tok::Char(_)
                            | Tok::Str(_)
                            | Tok::Punct("(")
                    )
            }
            _ => false,
        }
    }

    fn type_name(&mut self) -> Result<TypeName, ParseError> {
        let mut words: Vec<String> = Vec::new();
        while let Tok::Ident(w) = &self.peek().tok {
            let w = w.clone();
            let is_kw = TYPE_WORDS.contains(&w.as_str());
            // After a tag keyword comes the tag; a typedef name stands
            // alone.
            let tag_next = matches!(
                words.last().map(String::as_str),
                Some("struct" | "union" | "enum")
            );
            if !is_kw && !tag_next && !words.is_empty() {
                break;
            }
            self.next();
            if w != "const" && w != "volatile" {
                words.push(w);
            }
            if !is_kw && !tag_next {
                break;
            }
        }
        let mut pointers = 0;
        while self.eat("*") {
            pointers += 1;
            while matches!(&self.peek().tok, Tok::Ident(w) if w == "const" || w == "volatile") {
                self.next();
            }
        }
        if words.is_empty() {
            return Err(self.error_here("expected a type name".into()));
        }
        if let Some(tag @ ("struct" | "union" | "enum")) = words.last().map(String::as_str) {
            return Err(self.error_here(format!("expected a name after '{tag}'")));
        }
        Ok(TypeName {
            base: canonical_base(&words),
            pointers,
        })
    }

    fn postfix(&mut self, after: Option<&str>) -> Result<Expr, ParseError> {
        let mut e = self.primary(after)?;
        loop {
            let t = self.peek().clone();
            match t.tok {
                Tok::Punct(p @ ("." | "->")) => {
                    self.next();
                    let Tok::Ident(field) = self.peek().tok.clone() else {
                        return Err(self.error_here(format!("expected a field name after '{p}'")));
                    };
                    self.next();
                    let column = e.column;
                    e = Expr {
                        kind: ExprKind::Member {
                            base: Box::new(e),
                            field,
                            arrow: p == "->",
                        },
                        column,
                    };
                }
                Tok::Punct("[") => {
                    self.next();
                    let index = self.binary(1, Some("["))?;
                    self.expect_close("]", t.column, "[")?;
                    let column = e.column;
                    e = Expr {
                        kind: ExprKind::Index(Box::new(e), Box::new(index)),
                        column,
                    };
                }
                Tok::Punct("(") => {
                    return Err(self.error_here("function calls are not supported".into()))
                }
                Tok::Punct(p @ ("++" | "--")) => {
                    return Err(self.error_here(format!(
                        "'{p}' is not supported: expressions only read the program"
                    )))
                }
                _ => return Ok(e),
            }
        }
    }

    fn primary(&mut self, after: Option<&str>) -> Result<Expr, ParseError> {
        let t = self.peek().clone();
        let kind = match t.tok {
            Tok::Ident(name) => ExprKind::Ident(name),
            Tok::Int {
                value,
                unsigned,
                long,
            } => ExprKind::Int {
                value,
                unsigned,
                long,
            },
            Tok::Char(c) => ExprKind::Char(c),
            Tok::Str(s) => ExprKind::Str(s),
            Tok::Punct("(") => {
                self.next();
                let inner = self.binary(1, Some("("))?;
                self.expect_close(")", t.column, "(")?;
                return Ok(inner);
            }
            ref other => {
                let message = match (after, other) {
                    (Some(op), _) => format!("expected an expression after '{op}'"),
                    (None, _) => format!("expected an expression, found {}", other.describe()),
                };
                return Err(self.error_here(message));
            }
        };
        self.next();
        Ok(Expr {
            kind,
            column: t.column,
        })
    }
}

/// One spelling per C base type (`long unsigned int` → `unsigned long`)
/// so that lookups by name find DWARF's types (named the same way by
/// [`crate::dwarf::types::c_base_name`]).
fn canonical_base(words: &[String]) -> String {
    let has = |w: &str| words.iter().any(|x| x == w);
    let longs = words.iter().filter(|w| *w == "long").count();
    if let Some(tag) = ["struct", "union", "enum"].iter().find(|t| has(t)) {
        let name = words.iter().find(|w| !TYPE_WORDS.contains(&w.as_str()));
        return format!("{tag} {}", name.map_or("", String::as_str));
    }
    let unsigned = if has("unsigned") { "unsigned " } else { "" };
    let core = if has("void") {
        return "void".into();
    } else if has("_Bool") {
        return "_Bool".into();
    } else if has("float") {
        return "float".into();
    } else if has("double") {
        return if longs > 0 { "long double" } else { "double" }.into();
    } else if has("char") {
        if has("signed") {
            return "signed char".into();
        }
        "char"
    } else if has("short") {
        "short"
    } else if longs >= 2 {
        "long long"
    } else if longs == 1 {
        "long"
    } else if words.iter().all(|w| TYPE_WORDS.contains(&w.as_str())) {
        "int"
    } else {
        // A typedef name.
        return words.join(" ");
    };
    format!("{unsigned}{core}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(e: &Expr) -> String {
        match &e.kind {
            ExprKind::Ident(n) => n.clone(),
            ExprKind::Int { value, .. } => value.to_string(),
            ExprKind::Char(c) => format!("'{}'", *c as char),
            ExprKind::Str(s) => format!("{:?}", String::from_utf8_lossy(s)),
            ExprKind::Unary(op, i) => format!("({op:?} {})", shape(i)),
            ExprKind::Binary(op, a, b) => format!("({} {} {})", shape(a), op.symbol(), shape(b)),
            ExprKind::Member { base, field, arrow } => {
                format!("{}{}{field}", shape(base), if *arrow { "->" } else { "." })
            }
            ExprKind::Index(a, i) => format!("{}[{}]", shape(a), shape(i)),
            ExprKind::Cast(t, i) => format!("(({} {}) {})", t.base, t.pointers, shape(i)),
            ExprKind::SizeofType(t) => format!("sizeof({})", t.base),
            ExprKind::SizeofExpr(i) => format!("sizeof {}", shape(i)),
        }
    }

    fn p(s: &str) -> String {
        shape(&parse(s).unwrap())
    }

    #[test]
    fn precedence_and_postfix() {
        assert_eq!(p("a + b * c"), "(a + (b * c))");
        assert_eq!(p("a - b - c"), "((a - b) - c)");
        assert_eq!(
            p("s.inner.x == 3 && n > 2"),
            "((s.inner.x == 3) && (n > 2))"
        );
        assert_eq!(p("*p->next"), "(Deref p->next)");
        assert_eq!(p("&arr[2] + 1"), "((AddrOf arr[2]) + 1)");
        assert_eq!(
            p("a || b && c | d ^ e & f"),
            "(a || (b && (c | (d ^ (e & f)))))"
        );
        assert_eq!(p("1 << 2 < 3"), "((1 << 2) < 3)");
        assert_eq!(p("(unsigned long) x"), "((unsigned long 0) x)");
        assert_eq!(p("(struct node *)p"), "((struct node 1) p)");
        assert_eq!(p("(size_t) x"), "((size_t 0) x)");
        assert_eq!(p("(a) * b"), "(a * b)");
        assert_eq!(p("sizeof(long int)"), "sizeof(long)");
        assert_eq!(p("sizeof x"), "sizeof x");
    }

    #[test]
    fn garbage_never_panics() {
        for s in [
            "(",
            ")",
            "((((",
            "a->",
            "*",
            "&&",
            "a[",
            "]",
            "'",
            "\"",
            "'\\x'",
            "0x",
            "1e5",
            "a..b",
            "(int",
            "(int)",
            "sizeof",
            "sizeof(",
            "(struct)x",
            "a ? b : c",
            "x++",
            "--x",
            "é",
            "a,b",
        ] {
            assert!(parse(s).is_err(), "{s:?} parsed");
        }
    }

    #[test]
    fn errors_name_the_column() {
        let e = parse("x > 2 &&").unwrap_err();
        assert_eq!(e.to_string(), "column 9: expected an expression after '&&'");
        let e = parse("(a + b").unwrap_err();
        assert_eq!(e.column, 7);
        assert!(e.message.contains("column 1"), "{e}");
        assert_eq!(parse("a = 1").unwrap_err().column, 3);
        assert_eq!(parse("a b").unwrap_err().column, 3);
        assert_eq!(parse("").unwrap_err().column, 1);
        assert_eq!(parse("f(1)").unwrap_err().column, 2);
        assert_eq!(
            parse("p->").unwrap_err().to_string(),
            "column 4: expected a field name after '->'"
        );
        assert_eq!(parse("a[1").unwrap_err().column, 4);
    }
}
