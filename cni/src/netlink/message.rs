//! Building netlink messages (header, fixed struct, nested attributes) and walking the
//! attributes of replies (`struct nlattr`, 4-byte aligned, netlink(7)).

/// A message under construction; the 16-byte `nlmsghdr` is filled in by [`Msg::finish`].
pub struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    pub fn new(ty: u16, flags: u16) -> Msg {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&[0; 8]);
        Msg {
            buf,
            nests: Vec::new(),
        }
    }

    /// Appends a fixed header (`ifinfomsg`, `ifaddrmsg`, `rtmsg`), padded to 4 bytes.
    pub fn raw(mut self, bytes: &[u8]) -> Msg {
        self.buf.extend_from_slice(bytes);
        self.pad();
        self
    }

    pub fn attr(mut self, ty: u16, data: &[u8]) -> Msg {
        let len = (4 + data.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    pub fn u8(self, ty: u16, v: u8) -> Msg {
        self.attr(ty, &[v])
    }

    pub fn u16(self, ty: u16, v: u16) -> Msg {
        self.attr(ty, &v.to_ne_bytes())
    }

    pub fn u32(self, ty: u16, v: u32) -> Msg {
        self.attr(ty, &v.to_ne_bytes())
    }

    /// A NUL-terminated string attribute.
    pub fn str(self, ty: u16, s: &str) -> Msg {
        let mut d = s.as_bytes().to_vec();
        d.push(0);
        self.attr(ty, &d)
    }

    pub fn begin(mut self, ty: u16) -> Msg {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&(ty | 0x8000).to_ne_bytes());
        self
    }

    /// Like [`Msg::begin`] without `NLA_F_NESTED` (veth's peer `ifinfomsg` expects it bare).
    pub fn begin_plain(mut self, ty: u16) -> Msg {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self
    }

    pub fn end(mut self) -> Msg {
        if let Some(start) = self.nests.pop() {
            let len = (self.buf.len() - start) as u16;
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    pub(super) fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }
}

/// Iterates `(type, payload)` over a run of attributes; the nested flag is masked off.
pub struct Attrs<'a>(pub &'a [u8]);

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);
    fn next(&mut self) -> Option<(u16, &'a [u8])> {
        let b = self.0;
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        let data = &b[4..len];
        self.0 = b.get((len + 3) & !3..).unwrap_or(&[]);
        Some((ty, data))
    }
}

pub fn read_u32(d: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(d.get(..4)?.try_into().ok()?))
}

pub fn read_str(d: &[u8]) -> String {
    let end = d.iter().position(|&c| c == 0).unwrap_or(d.len());
    String::from_utf8_lossy(&d[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nests_and_walks() {
        let m = Msg::new(16, 5)
            .raw(&[0; 16])
            .str(3, "eth0")
            .begin(18)
            .str(1, "veth")
            .end()
            .u32(4, 1500);
        let bytes = m.finish(7);
        assert_eq!(
            u32::from_ne_bytes(bytes[0..4].try_into().expect("4")) as usize,
            bytes.len()
        );
        let attrs: Vec<_> = Attrs(&bytes[32..]).collect();
        assert_eq!(attrs.len(), 3);
        assert_eq!(read_str(attrs[0].1), "eth0");
        assert_eq!(attrs[1].0, 18);
        assert_eq!(read_str(Attrs(attrs[1].1).next().expect("kind").1), "veth");
        assert_eq!(read_u32(attrs[2].1), Some(1500));
    }
}
