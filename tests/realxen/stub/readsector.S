/* Scenario 2's boot sector: reads the disk's second sector (LBA 1, CHS
   0/0/2) through the BIOS (INT 13h, AH=02h: SeaBIOS drives the IDE disk
   that the stub domain's QEMU emulates over its blkfront) and prints the
   NUL-terminated text found there, after its own start marker, on Xen's
   debug port (0xe9: "(dN) ..." in `xl dmesg`) and on COM1 (emulated by the
   same QEMU).  Built by tests/realxen/ourstub.py with
   as --32 + ld -m elf_i386 -Ttext 0x7c00 --oformat binary. */
    .code16
    .globl _start
_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $0x7c00, %sp
    sti
    mov %dx, %bp            /* DL: the BIOS boot drive; puts clobbers DX */
    mov $hello, %si
    call puts
    mov $0x0201, %ax        /* read 1 sector */
    mov $0x0002, %cx        /* cylinder 0, sector 2 */
    mov %bp, %dx
    xor %dh, %dh            /* head 0 */
    mov $0x7e00, %bx
    int $0x13
    jc fail
    mov $0x7e00, %si
    call puts
    jmp done
fail:
    mov $err, %si
    call puts
done:
    hlt
    jmp done
puts:
    lodsb
    test %al, %al
    jz 1f
    out %al, $0xe9
    mov $0x3f8, %dx
    out %al, %dx
    jmp puts
1:  ret
hello: .asciz "S2-MBR-UP reading LBA 1\n"
err: .asciz "S2-SECTOR-READ-FAILED\n"
    .org 510
    .byte 0x55, 0xaa
