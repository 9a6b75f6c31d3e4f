"""The Textual dashboard (``gradtui watch``). Never imports torch."""
