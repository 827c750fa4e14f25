// GET / of moe serve: page.html, built into the binary as it is (no build step, no copy to
// keep in step)
__asm__(".section .rodata\n"
        ".global serve_page_html\n"
        ".type serve_page_html, @object\n"
        "serve_page_html:\n"
        ".incbin \"src/serve/page.html\"\n"
        ".byte 0\n"
        ".size serve_page_html, . - serve_page_html\n"
        ".previous\n");
