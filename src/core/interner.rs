//! Interning of the few distinct strings of centres, windows, departments and items: the
//! engine keeps 4-byte [`Sym`]s in its per-case state and resolves them when rows are written.

use std::sync::Arc;

use hashbrown::HashMap;

use super::case::Sym;

/// Interns the few distinct strings of centres, windows, departments and items.
#[derive(Debug, Default, Clone)]
pub struct Interner {
    ids: HashMap<Arc<str>, Sym>,
    names: Vec<Arc<str>>,
}

impl Interner {
    /// A new interner where sym 0 is the empty string.
    pub fn new() -> Self {
        let mut i = Self::default();
        i.intern("");
        i
    }

    /// The sym of a string, adding it when new.
    pub fn intern(&mut self, s: &str) -> Sym {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.names.len() as Sym;
        let name: Arc<str> = Arc::from(s);
        self.names.push(name.clone());
        self.ids.insert(name, id);
        id
    }

    /// The string of a sym.
    pub fn resolve(&self, sym: Sym) -> &Arc<str> {
        &self.names[sym as usize]
    }

    /// The sym of a known string, without adding it.
    pub fn get(&self, s: &str) -> Option<Sym> {
        self.ids.get(s).copied()
    }
}
