"""End-to-end tests: real SIPp processes calling through a real proxy process."""
