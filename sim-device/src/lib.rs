//! A simulated fleet of vehicles speaking the MQTT contract v1.
