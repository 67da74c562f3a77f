//! Where each value of a manifest is: serde_yaml reports positions for syntax and type
//! errors only, so this pass walks the same text with yaml-rust2's event parser and records
//! the line and column of every key and value by its path (`guest.memory`,
//! `images.regions.0.address`). It also refuses what serde_yaml would accept silently or
//! report at the wrong place: a key given twice.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use super::ManifestError;

/// A position in the manifest, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    /// Line.
    pub line: usize,
    /// Column.
    pub column: usize,
}

impl From<Marker> for Pos {
    fn from(m: Marker) -> Pos {
        // yaml-rust2's columns are 0-based in its markers.
        Pos {
            line: m.line(),
            column: m.col() + 1,
        }
    }
}

/// The positions of a manifest's keys and values by path.
#[derive(Debug, Default)]
pub struct Spans {
    values: HashMap<String, Pos>,
    keys: HashMap<String, Pos>,
    /// A scalar's text by path (to read `apiVersion` before the schema is applied).
    scalars: HashMap<String, String>,
}

/// One open collection while walking: a mapping (waiting for a key, or for the value of
/// `key`) or a sequence (the next index).
enum Frame {
    Map {
        path: String,
        key: Option<String>,
        seen: HashMap<String, Pos>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

struct Walker {
    stack: Vec<Frame>,
    spans: Spans,
    error: Option<ManifestError>,
}

fn join(base: &str, seg: &str) -> String {
    if base.is_empty() {
        seg.to_string()
    } else {
        format!("{base}.{seg}")
    }
}

impl Walker {
    /// The path of the value that starts now, advancing the enclosing collection. `None`
    /// when the event is a mapping key (recorded as such).
    fn place(&mut self, ev: &Event, pos: Pos) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, next }) => {
                let p = join(path, &next.to_string());
                *next += 1;
                Some(p)
            }
            Some(Frame::Map { path, key, seen }) => match key.take() {
                Some(k) => Some(join(path, &k)),
                None => {
                    let name = match ev {
                        Event::Scalar(s, ..) => s.clone(),
                        _ => String::from("?"),
                    };
                    let full = join(path, &name);
                    if seen.insert(name.clone(), pos).is_some() && self.error.is_none() {
                        self.error = Some(ManifestError::at(
                            pos,
                            &full,
                            format!("{name} is given twice"),
                        ));
                    }
                    self.spans.keys.insert(full, pos);
                    *key = Some(name);
                    None
                }
            },
        }
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Pos::from(mark);
        match ev {
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            Event::Scalar(..)
            | Event::Alias(..)
            | Event::MappingStart(..)
            | Event::SequenceStart(..) => {
                let Some(path) = self.place(&ev, pos) else {
                    return;
                };
                self.spans.values.insert(path.clone(), pos);
                match ev {
                    Event::Scalar(text, ..) => {
                        self.spans.scalars.insert(path, text);
                    }
                    Event::MappingStart(..) => self.stack.push(Frame::Map {
                        path,
                        key: None,
                        seen: HashMap::new(),
                    }),
                    Event::SequenceStart(..) => self.stack.push(Frame::Seq { path, next: 0 }),
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

impl Spans {
    /// Walks `text`; a YAML syntax error or a key given twice is an error at its place.
    pub fn scan(text: &str) -> Result<Spans, ManifestError> {
        let mut w = Walker {
            stack: vec![],
            spans: Spans::default(),
            error: None,
        };
        Parser::new_from_str(text)
            .load(&mut w, false)
            .map_err(|e| ManifestError::at(Pos::from(*e.marker()), "", e.info().to_string()))?;
        match w.error {
            Some(e) => Err(e),
            None => Ok(w.spans),
        }
    }

    /// Where the value at `path` is; for a path that is absent, its nearest present parent
    /// (a missing field is reported at the mapping that lacks it).
    pub fn pos(&self, path: &str) -> Pos {
        let mut p = path;
        loop {
            if let Some(pos) = self.values.get(p) {
                return *pos;
            }
            match p.rfind('.') {
                Some(i) => p = &p[..i],
                None => {
                    return self
                        .values
                        .get("")
                        .copied()
                        .unwrap_or(Pos { line: 1, column: 1 })
                }
            }
        }
    }

    /// Where to point at for a message about `path`: a scalar value itself; the key of a
    /// collection (its first line is the key's); else the nearest present parent.
    pub fn report_pos(&self, path: &str) -> Pos {
        if self.scalars.contains_key(path) {
            return self.pos(path);
        }
        self.keys
            .get(path)
            .copied()
            .unwrap_or_else(|| self.pos(path))
    }

    /// The text of the scalar at `path`, if it is one.
    pub fn scalar(&self, path: &str) -> Option<&str> {
        self.scalars.get(path).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# memory: mentioned in a comment\napiVersion: sevctl/v1\nguest:\n  memory: 64M\n  mode: sev\nimages:\n  regions:\n    - address: 0x1000\n      file: a.bin\n    - address: 0x2000\n      file: b.bin\n";

    #[test]
    fn every_value_has_its_own_line() {
        let s = Spans::scan(TEXT).unwrap();
        assert_eq!(
            s.pos("guest.memory"),
            Pos {
                line: 4,
                column: 11
            }
        );
        assert_eq!(
            s.report_pos("guest.memory"),
            Pos {
                line: 4,
                column: 11
            }
        );
        assert_eq!(s.report_pos("images.regions"), Pos { line: 7, column: 3 });
        assert_eq!(s.pos("images.regions.1.address").line, 10);
        assert_eq!(s.pos("images.regions.1.file").line, 11);
        assert_eq!(s.scalar("apiVersion"), Some("sevctl/v1"));
        // Absent: the nearest parent.
        assert_eq!(s.pos("guest.vcpus").line, 4);
    }

    #[test]
    fn a_key_given_twice_is_refused_where_it_repeats() {
        let e = Spans::scan("guest:\n  mode: sev\n  vcpus: 2\n  mode: sev-es\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (4, "guest.mode"));
        assert!(e.message.contains("twice"), "{e}");
    }

    #[test]
    fn syntax_errors_have_the_parsers_position() {
        let e = Spans::scan("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.line >= 1, "{e}");
    }
}
