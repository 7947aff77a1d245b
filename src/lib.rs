//! Orchard: a self-hosted Apple device enrollment appliance.
