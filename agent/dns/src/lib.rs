//! keel-dns (being built).
