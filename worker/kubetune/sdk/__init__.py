"""What user code touches: the Trainable and function APIs, the Checkpoint
handle, checkpoint settings, stop criteria, result keys and the SDK's errors.
Imports the storage layer and the contract, never the runtime or the client."""
