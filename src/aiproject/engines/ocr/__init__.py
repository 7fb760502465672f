"""ocr engines."""
