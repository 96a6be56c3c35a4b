//! Canonical data types of dingbridge: the typed values every connector decodes vendor payloads
//! into, and every flow, template and sink reads.
//!
//! This crate owns:
//! - [`Money`] and [`Currency`] (exact decimals, ISO 4217 codes with their minor units),
//! - [`Quantity`] and [`Uom`] (UN/ECE Rec 20 units, SAP unit codes mapped, exact conversion),
//! - [`ZonedTime`] (an instant, parsed from every vendor timestamp form, shown in Hong Kong time),
//! - [`Event`], the canonical event that flows from sources to sinks, and [`InboundChange`], the
//!   shape every source hands intake before it becomes one,
//! - [`ParseError`], the one error every parser here returns; it always names the field and the
//!   offending value so that an operator can find the bad input.
//!
//! Everything here is pure: no I/O, no async, no clock, no randomness. Callers that need "now"
//! or fresh ids create them elsewhere and pass them in. Nothing ever guesses: an input that could
//! mean two things ("100 units", "1,000.5", a timestamp without offset) is an error.

pub mod decimal;
mod error;
pub mod event;
pub mod inbound;
pub mod money;
pub mod quantity;
pub mod time;

pub use decimal::{parse_decimal, DecimalFormat};
pub use error::ParseError;
pub use event::{ChangeKind, Event, FieldType, TypedValue};
pub use inbound::InboundChange;
pub use money::{Currency, Money};
pub use quantity::{ConversionError, Dimension, PackagingFactors, Quantity, Uom};
pub use time::ZonedTime;

/// Re-exported so that users of [`Money`] and [`Quantity`] name the same decimal type.
pub use rust_decimal::Decimal;
