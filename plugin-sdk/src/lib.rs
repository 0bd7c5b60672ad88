//! WIT worlds and guest-side helpers that make an eyeflow connector or capability plugin a few dozen lines; built in a later issue.
