//! The embedded MQTT broker and the link to it.
