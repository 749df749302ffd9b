//! [`WsMessage`]: a text or binary message to send, cheap to clone for a broadcast.

use bytes::Bytes;
use tungstenite::protocol::frame::coding::{Data as Kind, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::{Message, Utf8Bytes};

/// A data message to send: text (UTF-8) or binary. Clones share the bytes, so a broadcast to
/// a group copies nothing per member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsMessage(Data);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Data {
    Text(Utf8Bytes),
    Binary(Bytes),
}

impl WsMessage {
    /// A text message.
    pub fn text(text: impl Into<String>) -> WsMessage {
        WsMessage(Data::Text(Utf8Bytes::from(text.into())))
    }

    /// A binary message.
    pub fn binary(data: impl Into<Bytes>) -> WsMessage {
        WsMessage(Data::Binary(data.into()))
    }

    /// A text message of bytes already checked as UTF-8 (as tungstenite returns them).
    pub(crate) fn from_text(text: Utf8Bytes) -> WsMessage {
        WsMessage(Data::Text(text))
    }

    /// Its text, if it is a text message.
    pub fn as_text(&self) -> Option<&str> {
        match &self.0 {
            Data::Text(t) => Some(t.as_str()),
            Data::Binary(_) => None,
        }
    }

    /// Whether it is a text message.
    pub fn is_text(&self) -> bool {
        matches!(self.0, Data::Text(_))
    }

    /// Its payload.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Data::Text(t) => t.as_bytes(),
            Data::Binary(b) => b,
        }
    }

    pub(crate) fn into_frame(self) -> Message {
        match self.0 {
            Data::Text(t) => Message::Text(t),
            Data::Binary(b) => Message::Binary(b),
        }
    }

    /// Its frame, compressed (RSV1 set) if that makes it smaller.
    pub(crate) fn into_deflated(self) -> Message {
        let Some(deflated) = super::deflate::deflate(self.as_bytes()) else {
            return self.into_frame();
        };
        let kind = match self.0 {
            Data::Text(_) => Kind::Text,
            Data::Binary(_) => Kind::Binary,
        };
        let mut frame = Frame::message(deflated, OpCode::Data(kind), true);
        frame.header_mut().rsv1 = true;
        Message::Frame(frame)
    }
}

impl From<&str> for WsMessage {
    fn from(text: &str) -> WsMessage {
        WsMessage::text(text)
    }
}

impl From<String> for WsMessage {
    fn from(text: String) -> WsMessage {
        WsMessage::text(text)
    }
}

impl From<Vec<u8>> for WsMessage {
    fn from(data: Vec<u8>) -> WsMessage {
        WsMessage::binary(data)
    }
}

impl From<&[u8]> for WsMessage {
    fn from(data: &[u8]) -> WsMessage {
        WsMessage::binary(Bytes::copy_from_slice(data))
    }
}

impl From<Bytes> for WsMessage {
    fn from(data: Bytes) -> WsMessage {
        WsMessage::binary(data)
    }
}
